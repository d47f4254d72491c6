"""Resumable checkpoints in one safetensors file: weights, optimizer state, LR schedules, step, data position and
every process's RNG states.

    RUN/checkpoints/step-0000500/checkpoint.safetensors

Tensors: ``model.<name>.<key>`` (trained modules), ``optim.<name>.<param index>.<key>`` (optimizer state),
``extra.<key>`` (e.g. EMA shadow weights), ``rng.<rank>.torch`` / ``rng.<rank>.numpy`` / ``rng.<rank>.cuda``.
Everything else (step, data position, LR schedulers, optimizer param groups, python RNG) is JSON in the file's
metadata under ``ldm3d_train``. A checkpoint is written to a hidden folder and renamed, so a crash never leaves one
that looks complete; only the last ``keep`` are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ldm3d.errors import FailedPrecondition

FILE = "checkpoint.safetensors"
META_KEY = "ldm3d_train"


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's RNG states: tensors and JSON-able parts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32).copy())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    py = random.getstate()
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().view(np.uint32), pos, has_gauss, cached))
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    v, internal, gauss = meta["python"]
    random.setstate((v, tuple(internal), gauss))


def checkpoints(run: Path) -> list[Path]:
    d = Path(run) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.startswith("step-") and (p / FILE).is_file())


def _host(v: torch.Tensor, seen: set) -> torch.Tensor:
    """A CPU view of ``v`` for saving, without a copy when it is on the CPU already (the SD U-Net's weights and Adam
    state are ~10 GB: copying them all at once is what runs a 23 GB machine out of memory); shared storages (tied
    weights) are copied, as safetensors refuses them."""
    v = v.detach().cpu().contiguous()
    key = (v.untyped_storage().data_ptr(), v.storage_offset())
    if key in seen or v.untyped_storage().nbytes() != v.numel() * v.element_size():
        v = v.clone()
    seen.add((v.untyped_storage().data_ptr(), v.storage_offset()))
    return v


def save(run: Path, step: int, modules: dict, optimizers: dict, schedulers: dict, state: dict,
         rng_all: list[tuple[dict, dict]], extra: dict[str, torch.Tensor] | None = None, keep: int = 3) -> Path:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: set = set()
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"model.{name}.{k}"] = _host(v, seen)
    groups = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        groups[name] = sd["param_groups"]
        scalars = {}
        for idx, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{name}.{idx}.{k}"] = _host(v, seen)
                else:
                    scalars[f"{idx}.{k}"] = v
        groups[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = _host(v, seen)
    rng_meta = []
    for rank, (t, m) in enumerate(rng_all):
        for k, v in t.items():
            tensors[f"rng.{rank}.{k}"] = _host(v, seen)
        rng_meta.append(m)
    meta = {"step": step, **state, "optimizers": groups,
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()}, "rng": rng_meta}
    root = Path(run) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / FILE), metadata={META_KEY: json.dumps(meta)})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, modules: dict, optimizers: dict, schedulers: dict, rank: int) -> tuple[dict, dict]:
    """Restore everything into the given objects and this rank's RNG; return ``(meta, extra tensors)``."""
    from safetensors import safe_open

    with safe_open(str(path / FILE), framework="pt") as f:
        meta = json.loads(f.metadata()[META_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for name, m in modules.items():
        prefix = f"model.{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise FailedPrecondition(f"checkpoint {path}: {name} does not match the model being trained (missing "
                                     f"{missing[:3]}, unexpected {unexpected[:3]}); resume with the same --model")
    for name, opt in optimizers.items():
        info = meta["optimizers"][name]
        state: dict = {}
        prefix = f"optim.{name}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                idx, key = k[len(prefix):].split(".", 1)
                state.setdefault(int(idx), {})[key] = v
        for k, v in info["scalars"].items():
            idx, key = k.split(".", 1)
            state.setdefault(int(idx), {})[key] = v
        opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    for name, s in schedulers.items():
        s.load_state_dict(meta["schedulers"][name])
    if rank < len(meta["rng"]):
        set_rng_state({k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"rng.{rank}.")},
                      meta["rng"][rank])
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta, extra
