"""The quality gate of ``ldm3d models promote --require-eval``: compare two releases' ``ldm3d evaluate`` reports.

    ldm3d evaluate --repository R --version 1 --captions caps.txt --out R/evaluations/release-1.json ...
    ldm3d evaluate --repository R --version 2 --captions caps.txt --out R/evaluations/release-2.json ...
    ldm3d models promote --repository R --version 2 --require-eval      # refused if 2 regresses against 1

A report belongs to a release when the model versions it records are that release's. Two reports are comparable
when they were made with the same captions (sha256), seeds, size, steps, scheduler and guidance: the gate finds the
newest comparable pair and refuses the candidate when its CLIP score dropped by more than ``max_clip_drop`` points
or its depth AbsRel rose by more than ``max_absrel_increase`` (relative: 0.1 = 10 %).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import FailedPrecondition
from .releases import Release

EVALUATIONS = "evaluations"  # default folder of reports inside the repository
MAX_CLIP_DROP = 0.5  # CLIP score points (the paper reports 26.61)
MAX_ABSREL_INCREASE = 0.10  # relative


@dataclass(frozen=True)
class Comparison:
    candidate: Path
    baseline: Path
    clip: tuple[float | None, float | None]  # (baseline, candidate)
    abs_rel: tuple[float | None, float | None]
    regressions: tuple[str, ...]

    def summary(self) -> str:
        def fmt(pair, digits):
            return " → ".join("n/a" if v is None else f"{v:.{digits}f}" for v in pair)

        names = f"{self.baseline.name} → {self.candidate.name}"
        return f"CLIP {fmt(self.clip, 2)}, AbsRel {fmt(self.abs_rel, 4)} ({names})"


def _key(settings: dict) -> tuple:
    seeds, caps = settings.get("seeds", {}), settings.get("captions", {})
    return (caps.get("sha256"), caps.get("used"), seeds.get("base"), settings.get("height"), settings.get("width"),
            settings.get("steps"), settings.get("scheduler"), settings.get("guidance_scale"))


def _reports(folder: Path) -> list[tuple[Path, dict]]:
    out = []
    for p in sorted(folder.rglob("*.json"), key=lambda q: q.stat().st_mtime, reverse=True):
        if any(part.endswith(".samples") for part in p.parts):
            continue
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("settings"), dict) and isinstance(doc.get("rows"), dict):
            out.append((p, doc))
    return out


def compare(folder: str | Path, candidate: Release, baseline: Release, max_clip_drop: float = MAX_CLIP_DROP,
            max_absrel_increase: float = MAX_ABSREL_INCREASE) -> Comparison:
    """The newest comparable pair of reports of ``candidate`` and ``baseline`` in ``folder``, compared.

    Raises ``FailedPrecondition`` naming ``require_eval`` when either release has no report, or none compare."""
    folder = Path(folder)
    hint = (f"run `ldm3d evaluate --repository REPO --version N --out {folder}/release-N.json ...` for both with the "
            "same captions and seeds")
    if not folder.is_dir():
        raise FailedPrecondition(f"require_eval: no evaluation reports: {folder} does not exist; {hint}",
                                 field="require_eval")
    reports = _reports(folder)

    def of(release: Release):
        return [(p, d) for p, d in reports if d["settings"].get("versions") == release.models]

    cand, base = of(candidate), of(baseline)
    for release, found in ((candidate, cand), (baseline, base)):
        if not found:
            raise FailedPrecondition(f"require_eval: no `ldm3d evaluate` report of release {release.number} "
                                     f"(model versions {release.models}) in {folder}; {hint}", field="require_eval")
    pair = next(((c, b) for c in cand for b in base if _key(c[1]["settings"]) == _key(b[1]["settings"])), None)
    if pair is None:
        raise FailedPrecondition(f"require_eval: the reports of release {candidate.number} ({cand[0][0].name}) and "
                                 f"release {baseline.number} ({base[0][0].name}) used different captions, seeds or "
                                 f"generation settings, so they do not compare; {hint}", field="require_eval")
    (cp, cd), (bp, bd) = pair
    clip = (bd["rows"].get("clip"), cd["rows"].get("clip"))
    absrel = (bd["rows"].get("abs_rel"), cd["rows"].get("abs_rel"))
    regressions = []
    if None not in clip and clip[0] - clip[1] > max_clip_drop:
        regressions.append(f"CLIP fell {clip[0] - clip[1]:.2f} points ({clip[0]:.2f} → {clip[1]:.2f}; allowed "
                           f"{max_clip_drop:g})")
    if None not in absrel and absrel[0] > 0 and (absrel[1] - absrel[0]) / absrel[0] > max_absrel_increase:
        regressions.append(f"depth AbsRel rose {100 * (absrel[1] - absrel[0]) / absrel[0]:.1f} % ({absrel[0]:.4f} → "
                           f"{absrel[1]:.4f}; allowed {100 * max_absrel_increase:g} %)")
    if clip == (None, None) and absrel == (None, None):
        raise FailedPrecondition(f"require_eval: {cp.name} and {bp.name} have neither a CLIP score nor a depth AbsRel "
                                 "(evaluate with --metrics clip,depth)", field="require_eval")
    return Comparison(cp, bp, clip, absrel, tuple(regressions))
