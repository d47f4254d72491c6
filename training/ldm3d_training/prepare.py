"""``ldm3d-train prepare``: captioned images (+ optional 16-bit depth) → WebDataset shards + ``manifest.json``.

    ldm3d-train prepare --input data.jsonl --out prep --resolution 512 [--depth-model Intel/dpt-large]
    ldm3d-train prepare --input photos/ --out prep --resolution 512            # a.jpg + a.txt (+ a.depth.png)
    ldm3d-train prepare --input laion-shards/ --out prep --resolution 512      # img2dataset tars (jpg + txt)

Inputs:
* a **JSONL** file: one ``{"caption": ..., "image": PATH, "depth": PATH?}`` per line, paths relative to the file;
* a **folder** of images, each with a ``.txt`` caption of the same stem and optionally a ``<stem>.depth.png``;
* **WebDataset tars** as img2dataset writes them (``jpg`` + ``txt``; a ``depth.png`` member is used when present).

Each sample is resized (shorter side, bicubic; depth in float, then rounded) and centre-cropped to ``N × N``.
Where depth is missing it is estimated with DPT exactly as LDM3D's data was made (:mod:`ldm3d.evaluation.depth_models`:
384² inference, bicubic back to the image, per-image 16-bit, larger = nearer). Shards hold ``rgb.png`` (8-bit),
``depth.png`` (16-bit), ``txt`` and ``json``; packing into the VAE's 6 or 4 channels happens at training time with
:mod:`ldm3d.codec` for the checkpoint being trained.

Every ``--shard-size`` input items make one ``train-NNNNNN.tar`` (and one ``val-NNNNNN.tar`` when the split puts
samples there); a finished chunk is recorded in ``.progress.json``, so an interrupted run resumes after it. A bad
sample (unreadable image, 8-bit depth, size mismatch, no caption) is skipped and listed in the manifest with the
reason.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ldm3d import codec
from ldm3d.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PROGRESS = ".progress.json"
FORMAT = "ldm3d-train-webdataset"
SCHEMA = 1
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
DEPTH_SUFFIX = ".depth.png"


class SkipSample(Exception):
    """A sample that cannot be used; the message is the reason listed in the manifest."""


@dataclass
class RawSample:
    key: str  # stable within the input
    source: str  # where it came from, for the skip list
    caption: str | None
    image: bytes | Path | None
    depth: bytes | Path | None
    error: str | None = None  # why the reader could not even read it


# --------------------------------------------------------------------------------------------- readers
def detect_kind(path: Path) -> str:
    if path.is_file() and path.suffix == ".jsonl":
        return "jsonl"
    if path.is_file() and path.suffix == ".tar":
        return "webdataset"
    if path.is_dir():
        if any(p.suffix == ".tar" for p in path.iterdir()):
            return "webdataset"
        if any(p.suffix.lower() in IMAGE_EXTS for p in path.iterdir()):
            return "folder"
        raise InvalidArgument(f"--input={str(path)!r} holds neither images with .txt captions nor .tar shards",
                              field="input")
    if not path.exists():
        raise NotFound(f"--input={str(path)!r}: no such file or folder", field="input")
    raise InvalidArgument(f"--input={str(path)!r} is not a .jsonl file, a .tar shard or a folder (use one of those)",
                          field="input")


def read_input(path: Path, kind: str) -> Iterator[RawSample]:
    if kind == "jsonl":
        yield from _read_jsonl(path)
    elif kind == "folder":
        yield from _read_folder(path)
    else:
        yield from _read_tars(path)


def count_input(path: Path, kind: str) -> int | None:
    if kind == "jsonl":
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    if kind == "folder":
        return sum(1 for p in path.iterdir() if _is_image(p))
    return None  # tars: unknown without reading them


def _read_jsonl(path: Path) -> Iterator[RawSample]:
    base = path.parent
    with open(path, encoding="utf-8") as f:
        n = 0
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            key, source = f"{n:09d}", f"{path.name}:{lineno}"
            n += 1
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                yield RawSample(key, source, None, None, None, f"invalid JSON line ({exc})")
                continue
            image, depth, caption = row.get("image"), row.get("depth"), row.get("caption")
            bad = next((k for k, v in (("image", image), ("depth", depth), ("caption", caption))
                        if v is not None and not isinstance(v, str)), None)
            if bad:
                yield RawSample(key, source, None, None, None, f"'{bad}' must be a string, got {row[bad]!r}")
                continue
            yield RawSample(key, source, caption, base / image if image else None, base / depth if depth else None)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.endswith(DEPTH_SUFFIX)


def _read_folder(path: Path) -> Iterator[RawSample]:
    for i, img in enumerate(sorted(p for p in path.iterdir() if _is_image(p))):
        txt = img.with_suffix(".txt")
        depth = img.with_name(img.stem + DEPTH_SUFFIX)
        caption = txt.read_text(encoding="utf-8", errors="replace") if txt.is_file() else None
        yield RawSample(f"{i:09d}", img.name, caption, img, depth if depth.is_file() else None)


def _read_tars(path: Path) -> Iterator[RawSample]:
    import webdataset as wds

    tars = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix == ".tar")
    n = 0
    for tar in tars:
        try:
            for s in wds.tarfile_samples([{"url": str(tar)}]):
                image = next((s[k] for k in ("jpg", "jpeg", "png", "webp") if k in s), None)
                caption = s.get("txt")
                yield RawSample(f"{n:09d}", f"{tar.name}:{s.get('__key__')}",
                                caption.decode("utf-8", "replace") if caption is not None else None, image,
                                s.get("depth.png"))
                n += 1
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign tar: list it, keep the rest
            yield RawSample(f"{n:09d}", tar.name, None, None, None,
                            f"unreadable tar ({exc.__class__.__name__}: {exc})")
            n += 1


# --------------------------------------------------------------------------------------------- one sample
def _open(data: bytes | Path, what: str) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        im.load()
        return im
    except FileNotFoundError:
        raise SkipSample(f"{what} file not found: {data}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SkipSample(f"unreadable {what} ({exc.__class__.__name__}: {exc})") from None


def _depth_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.uint16)
    if im.mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise SkipSample("depth values outside 0..65535: LDM3D needs a 16-bit depth PNG")
        return a.astype(np.uint16)
    raise SkipSample(f"8-bit depth (PNG mode {im.mode}): LDM3D needs 16-bit depth (larger = nearer); re-export it as "
                     "a 16-bit grayscale PNG, or leave it out to estimate it with DPT")


def _crop_box(w: int, h: int, n: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    s = n / min(w, h)
    rw, rh = max(n, round(w * s)), max(n, round(h * s))
    left, top = (rw - n) // 2, (rh - n) // 2
    return (rw, rh), (left, top, left + n, top + n)


def resize_crop_rgb(im: Image.Image, n: int) -> np.ndarray:
    size, box = _crop_box(*im.size, n)
    return np.asarray(im.convert("RGB").resize(size, Image.Resampling.BICUBIC).crop(box), dtype=np.uint8)


def resize_crop_depth(depth: np.ndarray, n: int) -> np.ndarray:
    h, w = depth.shape
    size, box = _crop_box(w, h, n)
    f = Image.fromarray(depth.astype(np.float32), mode="F").resize(size, Image.Resampling.BICUBIC).crop(box)
    return np.clip(np.rint(np.asarray(f)), 0, codec.DEPTH_MAX).astype(np.uint16)


class Preparer:
    def __init__(self, resolution: int, depth_model: str):
        self.resolution = resolution
        self.depth_model_id = depth_model
        self._dpt = None

    def depth_model(self):
        if self._dpt is None:
            from ldm3d.evaluation.depth_models import load_depth_model

            log.info("loading the depth estimator %s", self.depth_model_id)
            self._dpt = load_depth_model(self.depth_model_id, kind="dpt", field="depth_model")
        return self._dpt

    def process(self, raw: RawSample) -> tuple[dict, bool]:
        """``(sample dict for the TarWriter, depth_estimated)``; raises :class:`SkipSample`."""
        if raw.error:
            raise SkipSample(raw.error)
        caption = (raw.caption or "").strip()
        if not caption:
            raise SkipSample("no caption (a JSONL 'caption', a .txt next to the image, or a txt member)")
        if raw.image is None:
            raise SkipSample("no image")
        im = _open(raw.image, "image")
        depth = None
        if raw.depth is not None:
            depth_im = _open(raw.depth, "depth")
            depth = _depth_array(depth_im)
            if depth_im.size != im.size:
                raise SkipSample(f"size mismatch: image is {im.size[0]}x{im.size[1]}, depth is "
                                 f"{depth_im.size[0]}x{depth_im.size[1]}")
        rgb = resize_crop_rgb(im, self.resolution)
        estimated = depth is None
        if estimated:
            from ldm3d.evaluation.depth_models import estimate_relative_depth

            depth = estimate_relative_depth(self.depth_model(), rgb)
        else:
            depth = resize_crop_depth(depth, self.resolution)
        meta = {"source": raw.source, "depth": "estimated" if estimated else "provided"}
        return {"__key__": raw.key, "rgb.png": codec.encode_png(rgb), "depth.png": codec.encode_png(depth),
                "txt": caption.encode("utf-8"), "json": json.dumps(meta).encode()}, estimated


# --------------------------------------------------------------------------------------------- the command
def is_val(k: int, fraction: float) -> bool:
    """The ``k``-th accepted sample (from 0) goes to val when it raises ``round(n · fraction)`` (half up) of the
    prefix: any prefix of n samples holds the nearest whole number of val samples, deterministically and resumably."""
    return math.floor((k + 1) * fraction + 0.5) > math.floor(k * fraction + 0.5)


def prepare(input_path: str | Path, out: str | Path, resolution: int, depth_model: str = "Intel/dpt-large",
            val_fraction: float = 0.1, shard_size: int = 1000, progress: bool = True) -> dict:
    """Write the shards and ``manifest.json`` into ``out`` (resuming a partial run there); return the manifest."""
    import webdataset as wds
    from tqdm import tqdm

    from ldm3d.repository.manifest import sha256_file

    src, out = Path(input_path), Path(out)
    if resolution < 8 or resolution % 8:
        raise InvalidArgument(f"--resolution={resolution} is invalid: use a multiple of 8 (the VAE's downsampling), "
                              "e.g. 512", field="resolution")
    if not 0 <= val_fraction < 1:
        raise InvalidArgument(f"--val-fraction={val_fraction} is invalid: use a fraction in [0, 1)",
                              field="val_fraction")
    if shard_size < 1:
        raise InvalidArgument(f"--shard-size={shard_size} is invalid: use an integer >= 1", field="shard_size")
    kind = detect_kind(src)
    settings = {"input": str(src.resolve()), "input_kind": kind, "resolution": resolution,
                "val_fraction": val_fraction, "shard_size": shard_size, "depth_model": depth_model}
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).is_file():
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("settings") == settings:
            log.info("%s is complete already", out)
            return manifest
        raise InvalidArgument(f"--out={str(out)!r} already holds a prepared data set made with other settings "
                              f"({manifest.get('settings')}); use another --out", field="out")
    state = {"settings": settings, "chunks_done": 0, "accepted": 0, "shards": [], "skipped": [],
             "counts": {"input": 0, "provided": 0, "estimated": 0}}
    if (out / PROGRESS).is_file():
        saved = json.loads((out / PROGRESS).read_text())
        if saved.get("settings") != settings:
            raise InvalidArgument(f"--out={str(out)!r} holds a partial preparation with other settings "
                                  f"({saved.get('settings')}); use another --out or delete it", field="out")
        state = saved
        log.info("resuming after %d finished chunk(s)", state["chunks_done"])
    known = {s["name"] for s in state["shards"]}
    for p in out.glob("*.tar*"):  # a chunk interrupted mid-write
        if p.name not in known:
            p.unlink()

    prep = Preparer(resolution, depth_model)
    total = count_input(src, kind)
    bar = tqdm(total=total, disable=not progress, desc="prepare", unit="img", dynamic_ncols=True)
    bar.update(min(state["chunks_done"] * shard_size, total or 0))
    writers: dict[str, tuple] = {}
    chunk_skipped: list = []
    chunk_counts = {"input": 0, "provided": 0, "estimated": 0}
    accepted = state["accepted"]
    current = state["chunks_done"]

    def open_writer(split: str):
        name = f"{split}-{current:06d}.tar"
        tmp = out / f"{name}.partial"
        w = wds.TarWriter(str(tmp), encoder=False, mtime=0.0)
        writers[split] = (w, name, tmp, [0])
        return writers[split]

    def finish_chunk():
        nonlocal writers, chunk_skipped, chunk_counts
        new = []
        for split, (w, name, tmp, count) in sorted(writers.items()):
            w.close()
            tmp.replace(out / name)
            new.append({"name": name, "split": split, "count": count[0], "sha256": sha256_file(out / name)})
        state["shards"] += new
        state["skipped"] += chunk_skipped
        for k, v in chunk_counts.items():
            state["counts"][k] += v
        state["chunks_done"] = current + 1
        state["accepted"] = accepted
        _atomic_json(out / PROGRESS, state)
        writers, chunk_skipped, chunk_counts = {}, [], {"input": 0, "provided": 0, "estimated": 0}

    try:
        for i, raw in enumerate(read_input(src, kind)):
            chunk = i // shard_size
            if chunk < state["chunks_done"]:
                continue
            if chunk != current:
                finish_chunk()
                current = chunk
            chunk_counts["input"] += 1
            bar.update(1)
            try:
                sample, estimated = prep.process(raw)
            except SkipSample as why:
                chunk_skipped.append({"key": raw.key, "source": raw.source, "reason": str(why)})
                log.debug("skipped %s: %s", raw.source, why)
                continue
            split = "val" if is_val(accepted, val_fraction) else "train"
            accepted += 1
            w, _, _, count = writers.get(split) or open_writer(split)
            w.write(sample)
            count[0] += 1
            chunk_counts["estimated" if estimated else "provided"] += 1
        if chunk_counts["input"] or writers:
            finish_chunk()
    except BaseException:
        for w, _, tmp, _ in writers.values():
            w.close()
            tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()

    counts = {split: sum(s["count"] for s in state["shards"] if s["split"] == split) for split in ("train", "val")}
    manifest = {
        "format": FORMAT,
        "schema": SCHEMA,
        "settings": settings,
        "resolution": resolution,
        "counts": {"input": state["counts"]["input"], **counts, "skipped": len(state["skipped"])},
        "split": {"val_fraction": val_fraction, "rule": "the k-th accepted sample is val when "
                                                        "floor((k+1)·f + 1/2) > floor(k·f + 1/2)"},
        "depth": {"provided": state["counts"]["provided"], "estimated": state["counts"]["estimated"],
                  "model": depth_model if state["counts"]["estimated"] else None,
                  "estimation": "DPT at 384x384 (squashed), bicubic back, per-image 16-bit, larger = nearer"},
        "sample_fields": {"rgb.png": "8-bit sRGB", "depth.png": "16-bit grayscale", "txt": "caption (UTF-8)",
                          "json": "source"},
        "shards": state["shards"],
        "skipped": state["skipped"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _atomic_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    return manifest


def _atomic_json(path: Path, obj) -> None:
    codec.write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())
