"""Releases: which version of each model serves together, which release is current, and a running canary.

    from ldm3d.repository.releases import read_releases, add_release, promote
    rel = read_releases("model_repository")
    rel.current, rel.canary                       # 2, Canary(release=3, percent=50)
    rel.pick(request_id="a1b2").models            # {"text_encoder": 1, "unet": 3, "vae_decoder": 1, "vae_encoder": 1}
    n = add_release("model_repository", {"text_encoder": 1, "unet": 3, "vae_decoder": 1, "vae_encoder": 1},
                    source={"kind": "training", "run": "runs/unet-7"}).number
    promote("model_repository", n, canary=10)     # 10 % of requests that name no version get release n

A **release** is one version of each of the diffusion models (``text_encoder``, ``unet``, ``vae_decoder`` and
``vae_encoder`` where the repository has it). Triton's ``version_policy`` knows single models only; the set that must
move together is recorded here, in ``<repository>/releases.json``::

    {"schema": 1, "generation": 5, "updated": "...", "current": 2,
     "canary": {"release": 3, "percent": 10, "since": "..."} | null,
     "releases": [{"number": 1, "models": {"text_encoder": 1, ...}, "created": "...", "source": {...}}, ...],
     "history": [{"at": "...", "current": 2, "canary": null, "by": "..."}, ...]}

The file is the serving processes' source of truth: they poll it and converge on it (``ldm3d.runtime.releases``).
Every change is written whole to a temporary file, fsynced, and renamed over the old one (``os.replace``), so a
reader sees the old state or the new one, never a part; writers hold an ``fcntl`` lock on ``.releases.lock`` and
bump ``generation``, so two writers racing cannot lose an update, and a promote that verified against one state
refuses to write over another (:class:`ReleasesChanged`).

A repository without ``releases.json`` (everything exported before releases existed) reads as **implicit** releases:
release N = version N of every release model, for each N that all of them have; the current release is the N that
every model's ``version_policy`` currently serves, or, where they differ (a model version published that no release
names yet), the newest release that every pinned (``specific``) policy allows. The first write records the implicit
releases in the file, so their numbers never change. Once the file exists, ``version_policy`` no longer chooses
what the release models serve: the file does.

Canary assignment is sticky: a request id hashes to a fixed point in [0, 100), and the request goes to the canary
when that point is below the canary's percent. A retried request (same id) gets the same release, and raising the
percent only adds requests to the canary (none flips back).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from .layout import ModelRepository
from .release_file import RELEASE_MODELS, RELEASES, SCHEMA, ReleaseFile, parse_release_file, read_release_file

__all__ = ["RELEASES", "RELEASE_MODELS", "Canary", "Release", "Releases", "ReleasesChanged", "add_release",
           "canary_point", "ensure_release", "locked", "promote", "read_releases", "release_models", "verify_release"]

LOCK = ".releases.lock"
HISTORY = 100  # promotions kept in the file's history (an audit trail for rollbacks)
REQUIRED_MODELS = ("text_encoder", "unet", "vae_decoder")


class ReleasesChanged(FailedPrecondition):
    """``releases.json`` changed between reading it and writing it (another promote or publish raced this one)."""


@dataclass(frozen=True)
class Release:
    number: int
    models: dict[str, int]  # model name → version
    created: str = ""  # ISO 8601, UTC
    source: dict = field(default_factory=dict)  # free-form: {"kind": "export"|"training"|"implicit", ...}

    @property
    def label(self) -> str:
        """What responses' ``model_version`` say: the release number (``"0"`` for the unreleased fallback)."""
        return str(self.number)

    def to_json(self) -> dict:
        return {"number": self.number, "models": dict(self.models), "created": self.created, "source": self.source}


@dataclass(frozen=True)
class Canary:
    release: int
    percent: int  # 1..100
    since: str = ""


@dataclass(frozen=True)
class Releases:
    """One consistent reading of a repository's releases (immutable; read again to see changes)."""

    repository: Path
    releases: dict[int, Release]  # ascending by number
    current: int | None  # None: no release is current (implicit repository whose models' current versions differ)
    canary: Canary | None = None
    explicit: bool = False  # True when read from releases.json, False when derived from the version folders
    generation: int = 0  # bumped by every write
    updated: str = ""
    fallback: dict[str, int] = field(default_factory=dict)  # each model's own current version (version_policy)
    history: tuple = ()

    # ------------------------------------------------------------------ lookups
    def get(self, number: int) -> Release:
        """Release ``number``; ``NotFound`` naming ``version`` and the releases there are."""
        try:
            return self.releases[int(number)]
        except (KeyError, TypeError, ValueError):
            have = ", ".join(map(str, self.releases)) or "none"
            raise NotFound(f"version={number!r}: release {number} does not exist in {self.repository} (releases: "
                           f"{have}; `ldm3d models list --repository {self.repository}` shows them)",
                           field="version") from None

    def current_release(self) -> Release:
        """The release requests that name no version get (canary aside). Without a current release (an implicit
        repository whose models' current versions differ) this is release 0: each model's own current version."""
        if self.current is not None:
            return self.get(self.current)
        if not self.fallback:
            raise NotFound(f"repository={str(self.repository)!r} has no release to serve (export a checkpoint "
                           "into it with `ldm3d export`)", field="repository")
        return Release(0, dict(self.fallback), "", {"kind": "unreleased",
                                                    "note": "each model's current version (version_policy)"})

    def pick(self, request_id: str | None = None, version: int | None = None) -> Release:
        """The release for one request: ``version`` when named, else the canary for the request id's share of
        traffic, else the current release. Without a request id a canary draw is random (not sticky)."""
        if version is not None and int(version) != 0:
            return self.get(version)
        if self.canary is not None and self.canary.release in self.releases:
            if canary_point(request_id) < self.canary.percent:
                return self.releases[self.canary.release]
        return self.current_release()

    def serving(self) -> list[Release]:
        """The releases every serving process keeps loaded now: the current one and a running canary's."""
        out = [self.current_release()]
        if self.canary is not None and self.canary.release in self.releases and self.canary.release != out[0].number:
            out.append(self.releases[self.canary.release])
        return out

    def fingerprint(self) -> str:
        """Changes whenever what is served could change (watchers compare it; timestamps left out)."""
        state = {"current": self.current, "canary": self.canary and [self.canary.release, self.canary.percent],
                 "releases": {n: r.models for n, r in self.releases.items()}, "fallback": self.fallback}
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {"repository": str(self.repository), "explicit": self.explicit, "generation": self.generation,
                "updated": self.updated, "current": self.current,
                "canary": None if self.canary is None else {"release": self.canary.release,
                                                            "percent": self.canary.percent,
                                                            "since": self.canary.since},
                "releases": [r.to_json() for r in self.releases.values()]}


def canary_point(request_id: str | None) -> float:
    """A request id's fixed point in [0, 100): sha256 of the id, so it is the same in every process and replica."""
    if not request_id:
        request_id = uuid.uuid4().hex
    digest = hashlib.sha256(str(request_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


# ---------------------------------------------------------------------------------------------------------- reading
def _repo(repository) -> ModelRepository:
    return repository if isinstance(repository, ModelRepository) else ModelRepository(repository)


def release_models(repository) -> tuple[str, ...]:
    """The models a release of this repository names (``vae_encoder`` only where it exists)."""
    have = set(_repo(repository).models())
    return tuple(m for m in RELEASE_MODELS if m in have)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_releases(repository) -> Releases:
    """The repository's releases: ``releases.json`` when it exists, else the implicit ones (see the module doc).

    Raises ``FailedPrecondition`` naming the file when ``releases.json`` is unreadable or malformed (nothing is
    guessed: a serving process keeps its last good state and says why).
    """
    repo = _repo(repository)
    f = read_release_file(repo.root)
    return _implicit(repo) if f is None else _from_file(repo, f)


def _from_file(repo: ModelRepository, f: ReleaseFile) -> Releases:
    releases = {n: Release(n, r["models"], r["created"], r["source"]) for n, r in f.releases.items()}
    canary = None if f.canary is None else Canary(*f.canary)
    fallback = {} if f.current is not None else _policy_currents(repo)
    return Releases(repo.root, releases, f.current, canary, True, f.generation, f.updated, fallback, f.history)


def _policy_currents(repo: ModelRepository) -> dict[str, int]:
    out = {}
    for m in release_models(repo):
        with contextlib.suppress(NotFound):
            out[m] = repo.policy_current_version(m)
    return out


def _implicit(repo: ModelRepository) -> Releases:
    models = release_models(repo)
    releases: dict[int, Release] = {}
    if models and all(m in models for m in REQUIRED_MODELS):
        common = set.intersection(*(set(repo.versions(m)) for m in models))
        for n in sorted(common):
            created = ""
            with contextlib.suppress(Exception):  # a missing/corrupt manifest shows in verify, not here
                created = str(repo.manifest("unet", n).get("created", ""))
            releases[n] = Release(n, {m: n for m in models}, created, {"kind": "implicit",
                                                                      "note": f"version {n} of every model"})
    currents = _policy_currents(repo)
    values = set(currents.values())
    if len(currents) == len(models) and len(values) == 1 and next(iter(values)) in releases:
        current = next(iter(values))
    else:
        # The models' own current versions differ: typically a newly published model version that no release
        # names yet (``latest`` already points at it). The current release is the newest one that every pinned
        # (``specific``) policy allows; models following ``latest`` accept any.
        pinned = {m: set(repo.config(m).served_versions(repo.versions(m))) for m in models
                  if "specific" in repo.config(m).version_policy}
        allowed = [n for n in releases if all(n in served for served in pinned.values())]
        current = max(allowed) if allowed else None
    return Releases(repo.root, releases, current, None, False, 0, "", {} if current is not None else currents)


# ---------------------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def locked(repository, timeout_s: float = 10.0, holder: str = "") -> Iterator[ModelRepository]:
    """Hold the repository's release lock (``fcntl.flock`` on ``.releases.lock``) for a read-modify-write.

    Waits up to ``timeout_s``; then raises ``FailedPrecondition`` naming who holds it. Processes on other hosts
    sharing the volume are covered where the filesystem supports ``flock`` (local disks, NFSv4, CephFS)."""
    repo = _repo(repository)
    path = repo.root / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    with contextlib.suppress(OSError):
                        who = path.read_text().strip()
                    raise FailedPrecondition(
                        f"repository={str(repo.root)!r}: another promote or publish is changing its releases "
                        f"({who or 'holder unknown'}) and did not finish within {timeout_s:g} s; nothing was "
                        "changed: run this again when it is done", field="repository") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename} since {_now()} {holder}".strip().encode(), 0)
        yield repo
    finally:
        os.close(fd)  # closing releases the flock


def _write(repo: ModelRepository, rel: Releases, releases: Mapping[int, Release], current: int | None,
           canary: Canary | None, by: str) -> Releases:
    from ..codec import write_bytes_atomic

    now = _now()
    entry = {"at": now, "current": current,
             "canary": None if canary is None else {"release": canary.release, "percent": canary.percent},
             "by": by}
    history = list(rel.history)
    if not history or {k: history[-1].get(k) for k in ("current", "canary")} != {k: entry[k] for k in
                                                                                  ("current", "canary")}:
        history.append(entry)
    doc = {"schema": SCHEMA, "generation": rel.generation + 1, "updated": now, "current": current,
           "canary": None if canary is None else {"release": canary.release, "percent": canary.percent,
                                                  "since": canary.since or now},
           "releases": [r.to_json() for _, r in sorted(releases.items())], "history": history[-HISTORY:]}
    path = repo.root / RELEASES
    text = json.dumps(doc, indent=2) + "\n"
    write_bytes_atomic(path, text.encode())
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(repo.root, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return _from_file(repo, parse_release_file(path, text))


def _check_models(repo: ModelRepository, models: Mapping[str, int]) -> dict[str, int]:
    want = release_models(repo)
    unknown = [m for m in models if m not in want]
    missing = [m for m in want if m not in models]
    if unknown or missing:
        raise InvalidArgument(f"models={dict(models)!r} is invalid: a release names one version of each of "
                              f"{', '.join(want)} (missing {missing or 'none'}, unknown {unknown or 'none'})",
                              field="models")
    out = {}
    for m in want:
        try:
            v = int(models[m])
        except (TypeError, ValueError):
            raise InvalidArgument(f"models[{m!r}]={models[m]!r} is invalid: expected a version number",
                                  field="models") from None
        if v not in repo.versions(m):
            raise NotFound(f"model {m!r} version {v}: {repo.version_dir(m, v)} does not exist (versions on disk: "
                           f"{repo.versions(m) or 'none'})", field="models")
        out[m] = v
    return out


def add_release(repository, models: Mapping[str, int], source: Mapping | None = None, *,
                lock_timeout_s: float = 10.0) -> Release:
    """Record a new release (the next number) of ``models`` (one version of every release model; the versions
    must exist on disk). It is not served until promoted. An implicit repository's releases are written first."""
    repo = _repo(repository)
    models = _check_models(repo, models)
    with locked(repo, lock_timeout_s, "add_release"):
        rel = read_releases(repo)
        number = max(rel.releases, default=0) + 1
        release = Release(number, models, _now(), dict(source or {}))
        releases = {**rel.releases, number: release}
        current = rel.current
        _write(repo, rel, releases, current, rel.canary, f"add_release {number}")
    return release


def ensure_release(repository, models: Mapping[str, int], source: Mapping | None = None, *,
                   lock_timeout_s: float = 10.0) -> tuple[Release, bool]:
    """The release of exactly ``models``: an existing one (returned with ``False``) or a new one (``True``).
    Used after an export, whose version folders may already read as an implicit release."""
    repo = _repo(repository)
    models = _check_models(repo, models)
    with locked(repo, lock_timeout_s, "ensure_release"):
        rel = read_releases(repo)
        same = [r for r in rel.releases.values() if r.models == models]
        if same:
            if not rel.explicit:  # record the implicit releases, so that their numbers never change
                _write(repo, rel, rel.releases, rel.current, rel.canary, f"record release {same[-1].number}")
            return same[-1], False
        number = max(rel.releases, default=0) + 1
        release = Release(number, models, _now(), dict(source or {}))
        _write(repo, rel, {**rel.releases, number: release}, rel.current, rel.canary, f"add_release {number}")
    return release, True


def verify_release(repository, number: int, quick: bool = False) -> list[str]:
    """Every problem of release ``number``'s files against their manifests (sha256 unless ``quick``)."""
    repo = _repo(repository)
    release = read_releases(repo).get(number)
    problems = []
    for m, v in release.models.items():
        d = repo.version_dir(m, v)
        if not d.is_dir():
            problems.append(f"model {m!r} version {v}: {d} does not exist")
            continue
        problems += [f"model {m!r} version {v}: {d / p.path}: {p.detail}"
                     for p in repo.verify(m, v, quick=quick) if p.problem != "unlisted"]
    return problems


def promote(repository, number: int, canary: int | None = None, *, verify: bool = True,
            expect_generation: int | None = None, lock_timeout_s: float = 10.0, by: str = "") -> Releases:
    """Make release ``number`` current (``canary=None``), send ``canary`` % of requests that name no version to
    it (1..100), or end a running canary (``canary=0``; the current release stays).

    The release's files are sha256-verified first (``verify``); nothing is written when they fail
    (``FailedPrecondition`` naming ``version``). ``expect_generation`` (the generation the caller's decision was
    based on) makes a promote that raced another one fail with :class:`ReleasesChanged` instead of overwriting it.
    Returns the new state.
    """
    repo = _repo(repository)
    rel = read_releases(repo)
    release = rel.get(number)
    if canary is not None:
        if isinstance(canary, bool) or not isinstance(canary, int) or not 0 <= canary <= 100:
            raise InvalidArgument(f"canary={canary!r} is invalid: give a percentage from 0 to 100 (0 ends a "
                                  "running canary)", field="canary")
        if canary > 0 and rel.current == release.number:
            raise InvalidArgument(f"canary={canary} is invalid for version={number}: release {number} is already "
                                  "the current release; canary another release, or promote without --canary",
                                  field="canary")
    if canary == 0:
        if rel.canary is not None and rel.canary.release != release.number:
            raise InvalidArgument(f"version={number} is invalid with canary=0: the running canary is release "
                                  f"{rel.canary.release}; end it with --version {rel.canary.release} --canary 0",
                                  field="version")
    elif verify:
        problems = verify_release(repo, release.number)
        if problems:
            raise FailedPrecondition(f"version={number}: release {number} cannot be promoted, its files fail "
                                     f"verification: {problems[0]}" + (f" (and {len(problems) - 1} more)"
                                                                       if len(problems) > 1 else "")
                                     + "; nothing was changed (`ldm3d models verify` lists every problem)",
                                     field="version")
    if expect_generation is None:
        expect_generation = rel.generation if rel.explicit else None
    with locked(repo, lock_timeout_s, f"promote {number}"):
        now = read_releases(repo)
        if (expect_generation is not None and now.generation != expect_generation) or (
                now.fingerprint() != rel.fingerprint()):
            raise ReleasesChanged(f"repository={str(repo.root)!r}: its releases changed while this promote was "
                                  f"verifying release {number} (generation {expect_generation or rel.generation} "
                                  f"→ {now.generation}: another promote or publish ran); nothing was changed: check "
                                  "`ldm3d models list` and run it again", field="repository")
        if canary == 0:
            current, new_canary = now.current, None
        elif canary is None:
            current, new_canary = release.number, None
        else:
            current = now.current
            if current is None:
                raise FailedPrecondition(f"canary={canary}: the repository has no current release to split traffic "
                                         "with; promote one first (`ldm3d models promote --version N`)",
                                         field="canary")
            since = now.canary.since if now.canary and now.canary.release == release.number else ""
            new_canary = Canary(release.number, canary, since)
        return _write(repo, now, now.releases, current, new_canary, by or f"promote {number}"
                      + (f" --canary {canary}" if canary is not None else ""))
