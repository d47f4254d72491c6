"""``manifest.json`` of one version folder: where it came from, how it was exported, and the sha256 of every file.

A version whose files no longer match their manifest (corrupted, truncated, replaced, missing) is reported by
``verify`` and refused by the runtimes: it is never loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import FailedPrecondition, NotFound

MANIFEST = "manifest.json"
SCHEMA = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_table(folder: Path) -> dict[str, dict]:
    """``relative path → {sha256, bytes}`` for every file under ``folder`` except the manifest itself."""
    return {
        str(p.relative_to(folder)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }


def write_manifest(folder: Path, manifest: dict) -> dict:
    manifest = {"schema": SCHEMA, **manifest, "files": file_table(folder)}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(folder / MANIFEST)
    return manifest


def read_manifest(folder: Path, model: str = "", version: int | str = "") -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise FailedPrecondition(f"model {model!r} version {version}: {path} is missing, so its files cannot be "
                                 "verified (re-export this version)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FailedPrecondition(f"model {model!r} version {version}: {path} is not valid JSON ({exc})") from None


@dataclass(frozen=True)
class FileProblem:
    path: str
    problem: str  # "missing", "size", "sha256", "unlisted"
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


def check_files(folder: Path, manifest: dict, quick: bool = False) -> list[FileProblem]:
    """Every problem with ``folder``'s files against ``manifest``; ``quick`` compares sizes only (no hashing)."""
    problems = []
    listed = manifest.get("files", {})
    for rel, want in listed.items():
        p = folder / rel
        if not p.is_file():
            problems.append(FileProblem(rel, "missing", "missing"))
            continue
        size = p.stat().st_size
        if size != want.get("bytes", size):
            problems.append(FileProblem(rel, "size", f"{size} bytes, manifest says {want['bytes']} (truncated?)"))
            continue
        if not quick and sha256_file(p) != want.get("sha256"):
            problems.append(FileProblem(rel, "sha256", "sha256 does not match the manifest (corrupted or replaced)"))
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".") and rel not in listed:
            problems.append(FileProblem(rel, "unlisted", "not listed in the manifest"))
    return problems


def verify_or_raise(folder: Path, model: str, version: int) -> dict:
    """Read the manifest and check every listed file; raise ``FailedPrecondition`` naming the first bad file."""
    if not folder.is_dir():
        raise NotFound(f"model {model!r} version {version}: {folder} does not exist", field="version")
    manifest = read_manifest(folder, model, version)
    bad = [p for p in check_files(folder, manifest) if p.problem != "unlisted"]
    if bad:
        raise FailedPrecondition(
            f"model {model!r} version {version}: {folder / bad[0].path}: {bad[0].detail}"
            + (f" (and {len(bad) - 1} more problem(s))" if len(bad) > 1 else "")
            + "; run `ldm3d models verify` and re-export or remove this version")
    return manifest
