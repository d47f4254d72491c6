"""``<repository>/releases.json`` as data: read and validated, with no knowledge of the version folders.

Both the repository layout (which versions of the release models are current and servable) and the release API
(:mod:`ldm3d.repository.releases`, which adds implicit releases and writing) read the file through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FailedPrecondition

RELEASES = "releases.json"
SCHEMA = 1
# The models a release moves together, in pipeline order; vae_encoder only where the repository has it.
RELEASE_MODELS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")


@dataclass(frozen=True)
class ReleaseFile:
    """One validated reading of ``releases.json``."""

    releases: dict[int, dict]  # number → {"models": {model: version}, "created": str, "source": dict}, ascending
    current: int | None
    canary: tuple[int, int, str] | None  # (release, percent, since)
    generation: int = 0
    updated: str = ""
    history: tuple = field(default_factory=tuple)

    def serving(self) -> list[int]:
        """Release numbers routed now: the current one and a running canary's."""
        out = [] if self.current is None else [self.current]
        if self.canary is not None and self.canary[0] not in out:
            out.append(self.canary[0])
        return out


def corrupt(path: Path, why: str) -> FailedPrecondition:
    return FailedPrecondition(f"{path} is corrupted ({why}); nothing was changed. Restore it (its history lists "
                              "every promotion) or move it away to fall back to implicit releases (release N = "
                              "version N of every model)", field="repository")


def read_release_file(root: str | Path) -> ReleaseFile | None:
    """``root/releases.json`` validated, or ``None`` when the repository records no releases. Raises
    ``FailedPrecondition`` naming the file when it is unreadable or malformed (nothing is guessed)."""
    path = Path(root) / RELEASES
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_release_file(path, text)


def parse_release_file(path: Path, text: str) -> ReleaseFile:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise corrupt(path, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise corrupt(path, f"expected a JSON object with schema {SCHEMA}")
    releases: dict[int, dict] = {}
    try:
        for r in doc["releases"]:
            number = int(r["number"])
            if number < 1 or number in releases:
                raise ValueError(f"release number {number} is not positive or appears twice")
            releases[number] = {"models": {str(m): int(v) for m, v in r["models"].items()},
                                "created": str(r.get("created", "")), "source": dict(r.get("source") or {})}
        current = doc.get("current")
        current = None if current is None else int(current)
        canary = doc.get("canary")
        canary = None if not canary else (int(canary["release"]), int(canary["percent"]), str(canary.get("since", "")))
        generation = int(doc.get("generation", 0))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise corrupt(path, f"{exc.__class__.__name__}: {exc}") from None
    if current is not None and current not in releases:
        raise corrupt(path, f"current release {current} is not among its releases")
    if canary is not None and (canary[0] not in releases or not 0 < canary[1] <= 100):
        raise corrupt(path, f"canary {canary[0]} at {canary[1]} % is not a release or not in 1..100")
    return ReleaseFile(dict(sorted(releases.items())), current, canary, generation, str(doc.get("updated", "")),
                       tuple(doc.get("history") or ()))
