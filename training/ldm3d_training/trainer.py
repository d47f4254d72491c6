"""The one training loop both stages share (nanoGPT / diffusers ``train_text_to_image.py`` style).

    one process:   ldm3d-train unet --model CKPT --data PREP --out RUN --steps 1000
    distributed:   torchrun --nproc_per_node 8 -m ldm3d_training unet --model CKPT --data PREP --out RUN --device hpu

A stage (:mod:`.autoencoder`, :mod:`.unet`) owns its models, optimizers and ``train_step``; this loop owns what is
common: the data stream and its position, per-step random generators, checkpoints and ``--resume``,
``metrics.jsonl``, validation, the progress bar, and ``RUN/final/``. Only rank 0 writes. Every random draw of a step
comes from a generator seeded with ``(seed, rank, step)``, so a resumed run draws exactly what an uninterrupted one
does: on CPU, 3 steps + resume to 6 is bit-identical to 6 straight (tested).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ldm3d.errors import FailedPrecondition, InvalidArgument, LDM3DError
from ldm3d.repository.manifest import sha256_file

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import Position, ShardStream
from .distributed import Dist

log = logging.getLogger(__name__)


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The CPU generator of one step on one rank (seeded from ``(seed, rank, step)`` through numpy's SeedSequence)."""
    s = int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator("cpu").manual_seed(s)


def code_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(Path(__file__).parent), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"



def check_run_folder(cfg: TrainConfig, resume: bool) -> Path | None:
    """Check ``--out`` against ``--resume`` before any model is loaded; return the checkpoint to resume from."""
    run = Path(cfg.out)
    saved = run / "config.json"
    if resume:
        found = ckpt.checkpoints(run)
        if not saved.is_file():
            raise FailedPrecondition(f"--resume: {run} holds no run (no config.json); drop --resume to "
                                     "start one")
        old = json.loads(saved.read_text())
        for k in ("stage", "model", "data", "batch_size", "seed", "lr", "vae"):
            if k in old and old[k] != cfg.to_dict().get(k):
                raise InvalidArgument(f"--resume: --{k.replace('_', '-')}={cfg.to_dict().get(k)!r} differs from "
                                      f"the run's {old[k]!r} ({saved}); resume with the same value",
                                      field=k)
        if not found:
            log.warning("--resume: no checkpoint in %s yet; starting from step 0", run)
        return found[-1] if found else None
    if saved.is_file() or ckpt.checkpoints(run):
        raise FailedPrecondition(f"--out={str(run)!r} already holds a run: add --resume to continue it, or "
                                 "choose another --out")
    return None


class Trainer:
    def __init__(self, cfg: TrainConfig, stage, dist: Dist, resume: bool):
        self.cfg, self.stage, self.dist = cfg, stage, dist
        self.run = Path(cfg.out)
        self.resume = resume
        self.metrics_path = self.run / "metrics.jsonl"
        self.last_metrics: dict = {}
        self.last_validation: dict = {}

    # ------------------------------------------------------------------ run folder
    def _prepare_run(self) -> Path | None:
        return check_run_folder(self.cfg, self.resume)

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict:
        cfg, dist, stage = self.cfg, self.dist, self.stage
        resume_from = self._prepare_run()
        self.dist.barrier()
        if dist.is_main:
            self.run.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run)
        stream = ShardStream(cfg.data, "train", dist.rank, dist.world_size, cfg.seed, cfg.batch_size,
                             cfg.shuffle_buffer, stage.vae_channels)
        step, position = 0, Position()
        if resume_from is not None:
            meta, extra = ckpt.load(resume_from, stage.modules(), stage.optimizers, stage.schedulers, dist.rank)
            stage.load_extra(extra)
            step, position = int(meta["step"]), Position(**meta["position"])
            self.last_validation = meta.get("validation", {})
            log.info("resumed from %s (step %d, epoch %d, batch %d)", resume_from, step, position.epoch,
                     position.batch)
        if dist.is_main:
            self._truncate_metrics(step)
        stage.wrap(dist)
        if step >= cfg.steps:
            log.warning("the run is at step %d already (--steps %d): nothing to train", step, cfg.steps)
        bar = None
        if dist.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=step, desc=stage.name, unit="step", dynamic_ncols=True)
        batches = stream.batches(position)
        global_batch = cfg.batch_size * dist.world_size
        try:
            while step < cfg.steps:
                t0 = time.perf_counter()
                position, batch = next(batches)
                metrics = stage.train_step(batch, step, step_generator(cfg.seed, dist.rank, step))
                step += 1
                dt = time.perf_counter() - t0
                if step % cfg.log_every == 0 or step == cfg.steps:
                    metrics = self._mean_over_ranks(metrics)
                    row = {"step": step, **metrics, "lr": stage.lr(),
                           "samples_per_s": global_batch / dt, "world_size": dist.world_size,
                           "epoch": position.epoch}
                    self.last_metrics = row
                    if dist.is_main:
                        with open(self.metrics_path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
                    bar.update(1)
                if cfg.validate_every > 0 and step % cfg.validate_every == 0 and step != cfg.steps:
                    self._validate(step)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self._checkpoint(step, position)
        finally:
            if bar is not None:
                bar.close()
        if cfg.validate_every >= 0 and (not self.last_validation or self.last_validation.get("step") != step):
            self._validate(step)
        replicas = self._replica_check()
        if dist.is_main:
            self._write_final(step, replicas)
        dist.barrier()
        return {"step": step, "metrics": self.last_metrics, "validation": self.last_validation}

    # ------------------------------------------------------------------ pieces
    def _mean_over_ranks(self, metrics: dict) -> dict:
        """Logged values are the mean over all processes (each saw its own share of the batch)."""
        names = sorted(metrics)
        values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64)
        if self.dist.distributed:
            import torch.distributed as td

            values = values.to(self.dist.device)
            td.all_reduce(values)
            values = values.cpu() / self.dist.world_size
        return dict(zip(names, values.tolist()))

    def _truncate_metrics(self, step: int) -> None:
        """Drop lines past the resumed step (a run killed after its last checkpoint logged steps it will redo)."""
        if not self.metrics_path.is_file():
            return
        keep = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in keep))
        if keep:
            self.last_metrics = json.loads(keep[-1])

    def _checkpoint(self, step: int, position: Position) -> None:
        rng_all = self.dist.all_gather_object(ckpt.rng_state())
        if self.dist.is_main:
            path = ckpt.save(self.run, step, self.stage.modules(), self.stage.optimizers, self.stage.schedulers,
                             {"position": {"epoch": position.epoch, "batch": position.batch},
                              "validation": self.last_validation, "world_size": self.dist.world_size},
                             rng_all, self.stage.extra_state(), keep=self.cfg.keep_checkpoints)
            log.info("checkpoint %s", path)
        self.dist.barrier()

    def _validate(self, step: int) -> None:
        if self.dist.is_main:
            out = self.run / "validation" / f"step-{step:07d}"
            try:
                result = self.stage.validate(out)
            except LDM3DError as exc:  # a validation problem must not cost the run its weights
                log.warning("validation at step %d failed: %s", step, exc)
                result = {"error": str(exc)}
            self.last_validation = {"step": step, **result}
            with open(self.run / "validation.jsonl", "a") as f:
                f.write(json.dumps(self.last_validation) + "\n")
        self.dist.barrier()

    def _replica_check(self) -> dict:
        """Every rank's sha256 of the trained weights: DDP keeps them identical, and a run whose replicas drifted
        (a non-deterministic kernel, a rank that skipped a step) must not be published as if they had not."""
        h = hashlib.sha256()
        for name, m in self.stage.modules().items():
            for k, v in sorted(m.state_dict().items()):
                if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
                    continue  # BatchNorm statistics are per rank by design (DDP broadcasts them at each forward)
                h.update(f"{name}.{k}".encode())
                h.update(v.detach().float().cpu().numpy().tobytes())
        digests = self.dist.all_gather_object(h.hexdigest())
        if len(set(digests)) != 1:
            raise FailedPrecondition(f"the {len(digests)} processes ended with different weights ({digests}); the "
                                     "run is not consistent and final/ was not written")
        return {"world_size": len(digests), "identical": True, "sha256": digests[0]}

    def _write_final(self, step: int, replicas: dict) -> None:
        final = self.run / "final"
        tmp = self.run / ".final.tmp"
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.stage.save_final(tmp)
        summary = {
            "stage": self.stage.name,
            "steps": step,
            "config": self.cfg.to_dict(),
            "data_manifest_sha256": sha256_file(Path(self.cfg.data) / "manifest.json"),
            "final_losses": {k: v for k, v in self.last_metrics.items() if k.endswith("loss") or k == "loss"},
            "last_metrics": self.last_metrics,
            "validation": self.last_validation,
            "world_size": self.dist.world_size,
            "replicas": replicas,
            "code_revision": code_revision(),
            "torch": torch.__version__,
            **self.stage.final_info(),
        }
        (tmp / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
