"""A Triton model repository on disk: ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/<version>/``.

"Current" follows Triton: the highest version that the config's ``version_policy`` serves. ``promote`` pins a
version (``specific { versions: [N] }``); ``remove`` deletes a version that the policy does not pin.
Once the repository records releases (``releases.json``, :mod:`ldm3d.repository.releases`), the release models'
current version is the current release's, and every version a release names is servable whatever the policy says.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from .config import ModelConfig, read_config, write_config
from .manifest import MANIFEST, FileProblem, check_files, read_manifest

CONFIG = "config.pbtxt"
MODEL_FILE = "model.onnx"
# checkpoint files stored with each version (checkpoint path → name in the version folder), so that a repository
# alone rebuilds the PipelineSpec: written by ldm3d.export, read by ldm3d.pipeline.spec.spec_from_repository
ASSETS = {
    "text_encoder": {"tokenizer": "tokenizer", "text_encoder/config.json": "text_encoder_config.json"},
    "unet": {"unet/config.json": "unet_config.json", "scheduler/scheduler_config.json": "scheduler_config.json",
             "model_index.json": "model_index.json"},
    "vae_decoder": {"vae/config.json": "vae_config.json"},
    "vae_encoder": {"vae/config.json": "vae_config.json"},
}


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: int
    path: Path
    served: bool  # the version_policy loads it
    current: bool  # what version=None resolves to


class ModelRepository:
    """Read and change one repository folder. Methods raise ``NotFound`` naming the model, version and path."""

    def __init__(self, root: str | Path, must_exist: bool = True):
        self.root = Path(root)
        if must_exist and not self.root.is_dir():
            raise NotFound(f"repository={str(root)!r}: no such model repository folder (create one with "
                           "`ldm3d export --model CHECKPOINT --repository DIR`)", field="repository")

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    # ------------------------------------------------------------------ discovery
    def models(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / CONFIG).is_file())

    def model_dir(self, model: str) -> Path:
        d = self.root / model
        if not (d / CONFIG).is_file():
            have = ", ".join(self.models()) or "none"
            raise NotFound(f"model={model!r} is not in repository {self.root} (no {d / CONFIG}; models there: {have})",
                           field="model")
        return d

    def config(self, model: str) -> ModelConfig:
        return read_config(self.model_dir(model) / CONFIG)

    def versions(self, model: str) -> list[int]:
        """Every version folder on disk (published or not by the policy), ascending."""
        d = self.model_dir(model)
        return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())

    def _recorded_releases(self):
        """``releases.json`` when the repository records releases, else ``None`` (then the policies decide)."""
        from .release_file import read_release_file

        return read_release_file(self.root)

    def served_versions(self, model: str) -> list[int]:
        from .release_file import RELEASE_MODELS

        on_disk = self.versions(model)
        served = self.config(model).served_versions(on_disk)
        rel = self._recorded_releases() if model in RELEASE_MODELS else None
        if rel is not None:
            named = {r["models"].get(model) for r in rel.releases.values()}
            served = sorted(set(served) | (named & set(on_disk)))
        return served

    def current_version(self, model: str) -> int:
        from .release_file import RELEASE_MODELS

        rel = self._recorded_releases() if model in RELEASE_MODELS else None
        if rel is not None and rel.current is not None and model in rel.releases[rel.current]["models"]:
            return rel.releases[rel.current]["models"][model]
        return self.policy_current_version(model)

    def policy_current_version(self, model: str) -> int:
        """The highest version the model's own ``version_policy`` serves (releases aside)."""
        served = self.config(model).served_versions(self.versions(model))
        if not served:
            on_disk = self.versions(model)
            raise NotFound(f"model {model!r} has no servable version in {self.root / model} (on disk: "
                           f"{on_disk or 'none'}; version_policy {self.config(model).version_policy or 'latest 1'})",
                           field="version")
        return served[-1]

    def resolve(self, model: str, version: int | None = None) -> int:
        """``version`` checked against the policy, or the current version when ``None``."""
        if version is None:
            return self.current_version(model)
        version = int(version)
        served = self.served_versions(model)
        if version not in served:
            on_disk = self.versions(model)
            why = ("it is on disk but version_policy does not serve it (`ldm3d models promote` it)"
                   if version in on_disk else "no such version folder")
            raise NotFound(f"model {model!r} version {version} is not available in {self.root}: {why}; "
                           f"served versions: {served or 'none'}", field="version")
        return version

    def version_dir(self, model: str, version: int) -> Path:
        return self.model_dir(model) / str(int(version))

    def info(self, model: str) -> list[VersionInfo]:
        served = self.served_versions(model)
        current = self.current_version(model) if served else None
        return [VersionInfo(model, v, self.version_dir(model, v), v in served, v == current)
                for v in self.versions(model)]

    def manifest(self, model: str, version: int) -> dict:
        d = self.version_dir(model, version)
        if not d.is_dir():
            raise NotFound(f"model {model!r} version {version}: {d} does not exist", field="version")
        return read_manifest(d, model, version)

    def next_version(self) -> int:
        """One more than the highest version of any model (so that one export numbers all its models alike)."""
        highest = 0
        for m in self.models():
            highest = max([highest, *self.versions(m)])
        return highest + 1

    # ------------------------------------------------------------------ checks
    def verify(self, model: str, version: int, quick: bool = False) -> list[FileProblem]:
        """Problems of one version's files against its manifest (empty when everything matches)."""
        d = self.version_dir(model, version)
        if not d.is_dir():
            raise NotFound(f"model {model!r} version {version}: {d} does not exist", field="version")
        if not (d / MANIFEST).is_file():
            return [FileProblem(MANIFEST, "missing", "missing: the version's files cannot be verified")]
        try:
            manifest = read_manifest(d, model, version)
        except FailedPrecondition as exc:
            return [FileProblem(MANIFEST, "sha256", str(exc))]
        problems = check_files(d, manifest, quick=quick)
        if not problems and (d / MODEL_FILE).is_file():
            from .config import check_config_matches_graph

            try:
                check_config_matches_graph(self.config(model), d / MODEL_FILE, version)
            except FailedPrecondition as exc:
                problems.append(FileProblem(CONFIG, "config", str(exc)))
        return problems

    # ------------------------------------------------------------------ changes
    def promote(self, model: str, version: int) -> None:
        """Serve exactly ``version`` of ``model`` (Triton ``version_policy: specific``)."""
        version = int(version)
        if version not in self.versions(model):
            raise NotFound(f"model {model!r} version {version}: {self.version_dir(model, version)} does not exist "
                           f"(versions on disk: {self.versions(model) or 'none'})", field="version")
        problems = [p for p in self.verify(model, version) if p.problem != "unlisted"]
        if problems:
            raise FailedPrecondition(f"model {model!r} version {version} cannot be promoted: "
                                     f"{self.version_dir(model, version) / problems[0].path}: {problems[0].detail}")
        path = self.model_dir(model) / CONFIG
        cfg = self.config(model).raw
        cfg["version_policy"] = {"specific": {"versions": [version]}}
        write_config(path, cfg)

    def follow_latest(self, model: str) -> None:
        """Undo a promote: serve the highest version again (``version_policy: latest { num_versions: 1 }``)."""
        path = self.model_dir(model) / CONFIG
        cfg = self.config(model).raw
        cfg["version_policy"] = {"latest": {"num_versions": 1}}
        write_config(path, cfg)

    def remove(self, model: str, version: int) -> None:
        """Delete one version folder; refuses the version a ``specific`` policy pins (promote another first)."""
        version = int(version)
        d = self.version_dir(model, version)
        if not d.is_dir():
            raise NotFound(f"model {model!r} version {version}: {d} does not exist", field="version")
        rel = self._recorded_releases()
        if rel is not None:
            serving = [n for n in rel.serving() if rel.releases[n]["models"].get(model) == version]
            if serving:
                raise FailedPrecondition(f"model {model!r} version {version} is served by release {serving[0]} "
                                         f"(current or canary in {self.root / 'releases.json'}): promote another "
                                         "release first")
        policy = self.config(model).version_policy
        if "specific" in policy and version in [int(v) for v in policy["specific"].get("versions", [])]:
            raise FailedPrecondition(f"model {model!r} version {version} is pinned by version_policy in "
                                     f"{self.model_dir(model) / CONFIG}: promote another version first")
        if not d.name.isdigit():
            raise InvalidArgument(f"version={version!r} is invalid: expected a version number", field="version")
        # rename first: Triton and the embedded runtime stop seeing the version at once, then delete at leisure
        trash = d.with_name(f".removing-{version}")
        if trash.exists():
            shutil.rmtree(trash)
        d.rename(trash)
        shutil.rmtree(trash)
