"""The paper's evaluation end to end (Tables 1 and 3): generate from a caption set, score, write one report.

    from ldm3d.evaluation.evaluate import EvaluateConfig, run_evaluation, report_markdown
    report = run_evaluation(EvaluateConfig(captions=Path("captions.txt"), out=Path("report.json"), model="Intel/ldm3d"))
    print(report_markdown(report))

Command line: ``ldm3d evaluate`` (docs/evaluation.md, "Image metrics and `ldm3d evaluate`").

Per caption ``i`` (seed ``seed + i``): generate RGB + 16-bit depth, then score the sample alone: CLIP similarity with
its caption, AbsRel/RMSE against ZoeDepth-N's depth of its RGB (§4.3). Each sample's files go to the work folder
``<report stem>.samples/`` (``NNNNN_rgb.png``, ``NNNNN_depth.png``, then ``NNNNN.json`` last, all written
atomically), so an interrupted run resumes: a sample whose JSON records the same generation settings is not
generated again, and a score recorded with the same scorer settings is not computed again. Set-level metrics come
last, over every sample's PNG: FID against ``reference_images``, the Inception Score, and the autoencoder's rFID
(reference photos with DPT depth → encode → decode, FID of the reconstructions against the inputs).

A metric that cannot be computed is ``null`` with the reason in ``notes``, never an estimate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import codec
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..models import hub
from .depth_metrics import DEFAULT_SAMPLES, DEFAULT_SEED, DepthMetrics, mean_metrics
from .image_metrics import DEFAULT_CLIP_MODEL, IS_SPLITS, FeatureExtractor

log = logging.getLogger(__name__)

#: The published LDM3D row (model cards of Intel/ldm3d; paper Table 1 and §4.3), for comparison only.
PAPER_ROW = {"fid": 27.82, "is": 28.79, "clip": 26.61, "abs_rel": 0.0911, "rmse": 0.334, "rfid": None}
PAPER_SETTINGS = "MS-COCO val captions, 512×512, 50 DDIM steps, guidance 5; depth against ZoeDepth-N"

#: What can be asked for (``--metrics``); "depth" gives both AbsRel and RMSE.
METRICS = ("fid", "is", "clip", "depth", "rfid")
ROWS = ("fid", "is", "clip", "abs_rel", "rmse", "rfid")
DEFAULT_REFERENCE_DEPTH_MODEL = hub.ZOEDEPTH
DEFAULT_RFID_DEPTH_MODEL = hub.DPT
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class EvaluateConfig:
    """Everything one evaluation depends on; the report records all of it. Defaults are the paper's settings."""

    captions: Path  # one caption per line, or a COCO captions JSON (annotations[].caption)
    out: Path  # the report (JSON); per-sample files go to <out stem>.samples/ beside it
    model: str | None = None  # diffusers LDM3D folder or hub id (torch runtime)
    repository: str | None = None  # or a Triton model repository (embedded ONNX Runtime)
    version: int | None = None  # the repository's release to evaluate (default: the current release)
    limit: int | None = None  # the first N captions
    height: int = 512
    width: int = 512
    steps: int = 50
    scheduler: str = "ddim"
    guidance_scale: float = 5.0
    seed: int = 0  # caption i is generated with seed + i
    metrics: tuple[str, ...] = METRICS
    clip_model: str = DEFAULT_CLIP_MODEL
    reference_depth_model: str = DEFAULT_REFERENCE_DEPTH_MODEL  # ZoeDepth-N, the §4.3 reference
    depth_samples: int = DEFAULT_SAMPLES
    depth_seed: int = DEFAULT_SEED
    reference_images: Path | None = None  # real photos for FID and rFID (e.g. the COCO val images)
    rfid_depth_model: str = DEFAULT_RFID_DEPTH_MODEL  # DPT: depth of the reference photos for the autoencoder
    is_splits: int = IS_SPLITS
    progress: bool = True

    def validate(self) -> None:
        if (self.model is None) == (self.repository is None):
            raise InvalidArgument("give exactly one of --model DIR_OR_ID or --repository DIR", field="model")
        if self.limit is not None and self.limit < 1:
            raise InvalidArgument(f"--limit {self.limit} is invalid: use a positive number of captions", field="limit")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise InvalidArgument(
                f"--metrics {','.join(self.metrics)!r}: use a comma-separated subset of {','.join(METRICS)}",
                field="metrics",
            )
        if self.seed < 0:
            raise InvalidArgument(f"--seed {self.seed} is invalid: use a non-negative integer", field="seed")
        if self.is_splits < 1:
            raise InvalidArgument(f"--is-splits {self.is_splits} is invalid: use 1 or more", field="is_splits")
        if self.out.suffix.lower() != ".json":
            raise InvalidArgument(f"--out {str(self.out)!r}: the report is JSON; name it *.json", field="out")
        if self.reference_images is not None and not self.reference_images.is_dir():
            raise NotFound(
                f"--reference-images {str(self.reference_images)!r}: no such folder", field="reference_images"
            )

    @property
    def work_dir(self) -> Path:
        return self.out.with_suffix(".samples")


@dataclass
class Captions:
    texts: list[str]  # after --limit
    total: int  # in the file
    format: str  # "text" or "coco-json"
    sha256: str


def read_captions(path: Path, limit: int | None = None) -> Captions:
    """Captions from a text file (one per line; blank lines skipped) or a COCO captions JSON (``annotations[]
    .caption`` in file order). Raises ``NotFound`` / ``InvalidArgument`` (field ``captions``)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"--captions {str(path)!r}: no such file", field="captions")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgument(f"--captions {str(path)!r} is not UTF-8 text", field="captions") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
            texts = [str(a["caption"]) for a in doc["annotations"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidArgument(
                f'--captions {str(path)!r} is not a COCO captions file: expected {{"annotations": [{{"caption": '
                f"...}}, ...]}} ({exc.__class__.__name__}: {exc})",
                field="captions",
            ) from None
        fmt = "coco-json"
    else:
        texts, fmt = text.splitlines(), "text"
    texts = [" ".join(t.split()) for t in texts]
    texts = [t for t in texts if t]
    if not texts:
        raise InvalidArgument(
            f"--captions {str(path)!r} holds no captions (give one caption per line)", field="captions"
        )
    total = len(texts)
    return Captions(texts[:limit] if limit else texts, total, fmt, hashlib.sha256(data).hexdigest())


@dataclass
class _Scorers:
    clip: object | None = None  # ClipScorer
    zoe: object | None = None  # DepthModel
    fid: FeatureExtractor | None = None
    inception: FeatureExtractor | None = None
    reasons: dict = field(default_factory=dict)  # row → why it is null


def run_evaluation(
    config: EvaluateConfig,
    *,
    fid_features: FeatureExtractor | None = None,
    is_features: FeatureExtractor | None = None,
) -> dict:
    """Generate, score and write ``config.out``; returns the report. ``fid_features`` / ``is_features`` replace the
    standard InceptionV3 (tests pass a tiny random network; the report names whichever was used)."""
    config.validate()
    # 1. inputs first, so that a typo fails before any model loads
    captions = read_captions(config.captions, config.limit)
    references = _reference_files(config) if {"fid", "rfid"} & set(config.metrics) else []
    # 2. models: the generator, then every scorer (a missing one fails now, not after an hour of sampling)
    pipe = _pipeline(config)
    scorers = _load_scorers(config, fid_features, is_features)
    # 3. per sample: generate (or reuse), score (or reuse)
    counts = {"generated": 0, "reused": 0, "rescored": 0}
    records = []
    for record, what in _samples(config, captions, pipe, scorers):
        records.append(record)
        counts[what] += 1
    # 4. set-level metrics over the samples' PNGs, then the report
    rows, notes, details = _aggregate(config, records, references, pipe, scorers)
    report = _report(config, captions, pipe, scorers, rows, notes, details, counts, len(references))
    codec.write_bytes_atomic(config.out, (json.dumps(report, indent=2) + "\n").encode())
    return report


# --------------------------------------------------------------------------------------------- setup
def _pipeline(config: EvaluateConfig):
    from ..pipeline import LDM3DPipeline

    if config.model is not None:
        return LDM3DPipeline.from_checkpoint(config.model)
    return LDM3DPipeline.from_repository(config.repository, version=config.version)


def _load_scorers(config: EvaluateConfig, fid_features, is_features) -> _Scorers:
    from . import depth_models, image_metrics

    s = _Scorers()
    wanted = set(config.metrics)
    for row in ROWS:
        metric = "depth" if row in ("abs_rel", "rmse") else row
        if metric not in wanted:
            s.reasons[row] = "not requested (--metrics)"
    if "clip" in wanted:
        s.clip = image_metrics.load_clip(config.clip_model, field="clip_model")
    if "depth" in wanted:
        s.zoe = depth_models.load_depth_model(
            config.reference_depth_model, kind="zoedepth", field="reference_depth_model"
        )
    if config.reference_images is None:
        for row in ("fid", "rfid"):
            s.reasons.setdefault(row, "no --reference-images: FID and rFID compare against real photos")
    elif {"fid", "rfid"} & wanted:
        s.fid = fid_features or _standard(image_metrics, "fid", s, [r for r in ("fid", "rfid") if r in wanted])
    if "is" in wanted:
        s.inception = is_features or _standard(image_metrics, "is", s, ["is"])
    return s


def _standard(image_metrics, kind: str, s: _Scorers, rows: list[str]) -> FeatureExtractor | None:
    try:
        return image_metrics.standard_features(kind)
    except FailedPrecondition as exc:
        log.info("%s", exc)
        for row in rows:
            s.reasons.setdefault(row, str(exc))
        return None


def _reference_files(config: EvaluateConfig) -> list[Path]:
    if config.reference_images is None:
        return []
    files = sorted(p for p in config.reference_images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise InvalidArgument(
            f"--reference-images {str(config.reference_images)!r} holds {len(files)} image(s) "
            f"({'/'.join(IMAGE_SUFFIXES)}): FID needs at least 2",
            field="reference_images",
        )
    return files


# --------------------------------------------------------------------------------------------- per sample
def _samples(config: EvaluateConfig, captions: Captions, pipe, scorers: _Scorers) -> Iterator[tuple[dict, str]]:
    from tqdm import tqdm

    from ..pipeline import GenerateParams

    work = config.work_dir
    bar = tqdm(captions.texts, desc="evaluate", unit="sample", file=sys.stderr, disable=not config.progress)
    for i, caption in enumerate(bar):
        files = _sample_files(work, i)
        generation = {
            "caption": caption,
            "seed": config.seed + i,
            "height": config.height,
            "width": config.width,
            "steps": config.steps,
            "scheduler": config.scheduler,
            "guidance_scale": config.guidance_scale,
            # the weights and how they run, not the path they were loaded from (a rerun from elsewhere resumes)
            "checkpoint_sha256": pipe.spec.checkpoint_hash,
            "runtime": pipe.runtime.kind,
            "versions": dict(pipe.spec.versions),
        }
        record = _read_record(files["json"])
        if record is not None and record.get("generation") == generation and all(f.is_file() for f in files.values()):
            rgb = depth = None  # read only if a score must be computed
            what = "reused"
        else:
            files["json"].unlink(missing_ok=True)  # the PNGs below no longer belong to any record
            result = pipe(
                GenerateParams(
                    prompt=caption, height=config.height, width=config.width, steps=config.steps,
                    scheduler=config.scheduler, guidance_scale=config.guidance_scale, seed=config.seed + i,
                )
            )  # fmt: skip
            rgb, depth = result.rgb[0], result.depth[0]
            codec.write_png(files["rgb"], rgb)
            codec.write_png(files["depth"], depth)
            record = {"index": i, "generation": generation, "scores": {}, "timings_s": result.metadata["timings_s"]}
            what = "generated"
        changed = what == "generated"
        for name, settings, compute in _sample_scores(config, scorers, caption):
            stored = record["scores"].get(name)
            if stored is not None and stored.get("settings") == settings:
                continue
            if rgb is None:
                rgb, depth = codec.read_rgb(files["rgb"]), codec.read_depth(files["depth"])
            record["scores"][name] = {"settings": settings, **compute(rgb, depth)}
            changed = True
        if changed:
            codec.write_bytes_atomic(files["json"], (json.dumps(record, indent=2) + "\n").encode())
            if what == "reused":
                what = "rescored"
        bar.set_postfix_str(f"{what} {i:05d}")
        yield record, what


def _sample_scores(config: EvaluateConfig, scorers: _Scorers, caption: str):
    from .depth_models import reference_depth_metrics

    if scorers.clip is not None:
        clip = scorers.clip
        yield "clip", {"model": config.clip_model}, lambda rgb, _d: {"score": clip.score(rgb, caption)}
    if scorers.zoe is not None:
        zoe = scorers.zoe

        def depth(rgb, pred):
            m = reference_depth_metrics(pred, rgb, zoe, samples=config.depth_samples, seed=config.depth_seed)
            return m.to_dict()

        settings = {"model": config.reference_depth_model, "samples": config.depth_samples, "seed": config.depth_seed}
        yield "depth", settings, depth


def _sample_files(work: Path, i: int) -> dict[str, Path]:
    return {"rgb": work / f"{i:05d}_rgb.png", "depth": work / f"{i:05d}_depth.png", "json": work / f"{i:05d}.json"}


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is unreadable: generating that sample again", path)
        return None


# --------------------------------------------------------------------------------------------- set level
def _aggregate(config: EvaluateConfig, records: list[dict], references: list[Path], pipe, s: _Scorers):
    from . import image_metrics

    rows: dict = {r: None for r in ROWS}
    notes: dict = {r: s.reasons[r] for r in ROWS if r in s.reasons}
    details: dict = {}
    n = len(records)

    if s.clip is not None:
        scores = [r["scores"]["clip"]["score"] for r in records]
        rows["clip"] = float(np.mean(scores))
        notes["clip"] = f"mean over {n} images of 100·max(cos(image, caption), 0) (torchmetrics CLIPScore per pair)"
        details["clip"] = {"model": config.clip_model, "images": n}
    if s.zoe is not None:
        mean = mean_metrics(DepthMetrics(**{k: v for k, v in r["scores"]["depth"].items() if k != "settings"})
                            for r in records)  # fmt: skip
        rows["abs_rel"], rows["rmse"] = mean["abs_rel"], mean["rmse"]
        note = (
            f"mean over {n} images; disparity aligned to {config.reference_depth_model}'s metric depth of each "
            f"generated RGB by least squares on {config.depth_samples} sampled pixels (seed {config.depth_seed})"
        )
        notes["abs_rel"] = notes["rmse"] = note
        negative = sum(1 for r in records if r["scores"]["depth"]["scale"] < 0)
        details["depth"] = {"reference_model": config.reference_depth_model, "images": n, "negative_scale": negative}

    def generated():  # each metric streams the PNGs again: nothing holds every image in memory
        return (codec.read_rgb(_sample_files(config.work_dir, r["index"])["rgb"]) for r in records)

    def real():
        return (
            image_metrics.square_resize(codec.read_rgb(p, field="reference_images"), config.height, config.width)
            for p in references
        )

    if s.inception is not None:
        if n < 2:
            notes["is"] = f"needs at least 2 generated images; have {n}"
        else:
            # a split of one image scores exactly 1 whatever the model: use fewer splits for small runs, and say so
            splits = min(config.is_splits, n // 2)
            mean_is, std_is = image_metrics.inception_score(generated(), s.inception, splits=splits)
            rows["is"] = mean_is
            fewer = f" (fewer than --is-splits {config.is_splits}: {n} images)" if splits < config.is_splits else ""
            std = "" if std_is is None else f", std {std_is:.4g}"
            notes["is"] = f"{n} images, {splits} splits{fewer}{std}; features: {s.inception.name}"
            details["is"] = {"std": std_is, "splits": splits, "images": n, "feature_extractor": s.inception.name}
    if s.fid is not None and references:
        if "fid" in config.metrics:
            if n < 2:
                notes["fid"] = f"needs at least 2 generated images; have {n}"
            else:
                rows["fid"] = image_metrics.frechet_distance(real(), generated(), s.fid)
                notes["fid"] = (
                    f"{n} generated vs {len(references)} reference images (centre-cropped and resized to "
                    f"{config.width}x{config.height}); features: {s.fid.name}"
                )
                details["fid"] = {"images": n, "reference_images": len(references), "feature_extractor": s.fid.name}
        if "rfid" in config.metrics:
            rows["rfid"], notes["rfid"], details["rfid"] = _rfid(config, references, real, pipe, s.fid)
    return rows, {r: notes[r] for r in ROWS if r in notes}, details


def _rfid(config: EvaluateConfig, references: list[Path], real, pipe, features: FeatureExtractor):
    from . import depth_models, image_metrics

    dpt = depth_models.load_depth_model(config.rfid_depth_model, kind="dpt", field="rfid_depth_model")
    inputs = list(real())
    recon = [image_metrics.reconstruct(pipe.autoencoder, rgb, depth_models.estimate_relative_depth(dpt, rgb))[0]
             for rgb in inputs]  # fmt: skip
    value = image_metrics.frechet_distance(inputs, recon, features)
    note = (
        f"{len(inputs)} reference images with {config.rfid_depth_model} depth, through the autoencoder (posterior "
        f"mean → decoder), RGB reconstructions vs inputs; features: {features.name}"
    )
    return (
        value,
        note,
        {"images": len(inputs), "depth_model": config.rfid_depth_model, "feature_extractor": features.name},
    )


def _report(config, captions: Captions, pipe, s: _Scorers, rows, notes, details, counts, n_refs) -> dict:
    from .. import __version__

    return {
        "rows": rows,
        "notes": notes,
        "details": details,
        "paper": {"row": PAPER_ROW, "settings": PAPER_SETTINGS, "source": "LDM3D (Stan et al., 2023), Intel/ldm3d"},
        "settings": {
            "model": config.model or config.repository,
            "runtime": pipe.runtime.kind,
            "checkpoint_sha256": pipe.spec.checkpoint_hash,
            "versions": dict(pipe.spec.versions),  # repository model versions (empty for a checkpoint folder)
            "release": pipe.spec.release,  # the repository release those versions make (None for a checkpoint)
            "height": config.height,
            "width": config.width,
            "steps": config.steps,
            "scheduler": config.scheduler,
            "guidance_scale": config.guidance_scale,
            "negative_prompt": "",
            "seeds": {
                "base": config.seed,
                "rule": "caption i is generated with seed base + i",
                "first": config.seed,
                "last": config.seed + len(captions.texts) - 1,
            },
            "captions": {
                "file": str(config.captions),
                "sha256": captions.sha256,
                "format": captions.format,
                "in_file": captions.total,
                "used": len(captions.texts),
            },
            "limit": config.limit,
            "metrics": list(config.metrics),
            "clip_model": config.clip_model if s.clip is not None else None,
            "reference_depth_model": config.reference_depth_model if s.zoe is not None else None,
            "depth_samples": config.depth_samples,
            "depth_seed": config.depth_seed,
            "reference_images": _reference_settings(config, n_refs),
            "rfid_depth_model": config.rfid_depth_model if rows["rfid"] is not None else None,
            "feature_extractors": {
                "fid": s.fid.name if s.fid else None,
                "is": s.inception.name if s.inception else None,
            },
            "is_splits": config.is_splits,
        },
        "samples": {"count": len(captions.texts), **counts, "work_dir": str(config.work_dir)},
        "ldm3d_version": __version__,
    }


def _reference_settings(config: EvaluateConfig, n_refs: int) -> dict | None:
    if config.reference_images is None:
        return None
    return {
        "folder": str(config.reference_images),
        "images": n_refs,
        "preprocessing": "centre crop to the generation aspect ratio, Pillow bicubic resize",
    }


# --------------------------------------------------------------------------------------------- markdown
_HEADERS = {
    "fid": "FID ↓",
    "is": "IS ↑",
    "clip": "CLIP ↑",
    "abs_rel": "AbsRel ↓",
    "rmse": "RMSE [m] ↓",
    "rfid": "rFID ↓",
}
_DIGITS = {"fid": 2, "is": 2, "clip": 2, "abs_rel": 4, "rmse": 3, "rfid": 2}


def report_markdown(report: dict) -> str:
    """Our row beside the paper's published LDM3D row, then a note for every metric (and why any is missing)."""
    s = report["settings"]
    ours = f"this run: {s['model']} ({report['samples']['count']} captions, {s['width']}×{s['height']}, " \
           f"{s['steps']} {s['scheduler']} steps, guidance {s['guidance_scale']:g})"  # fmt: skip
    lines = [
        "| | " + " | ".join(_HEADERS[r] for r in ROWS) + " |",
        "|---|" + "---:|" * len(ROWS),
        f"| {ours} | " + " | ".join(_fmt(report["rows"][r], r) for r in ROWS) + " |",
        f"| LDM3D, paper ({report['paper']['settings']}) | "
        + " | ".join(_fmt(report["paper"]["row"][r], r) for r in ROWS) + " |",
        "",
    ]  # fmt: skip
    for r in ROWS:
        if r in report["notes"]:
            lines.append(f"- **{_HEADERS[r].split()[0]}**: {report['notes'][r]}")
    return "\n".join(lines) + "\n"


def _fmt(value, row: str) -> str:
    return "—" if value is None else f"{value:.{_DIGITS[row]}f}"


__all__ = ["METRICS", "PAPER_ROW", "ROWS", "EvaluateConfig", "read_captions", "report_markdown", "run_evaluation"]
