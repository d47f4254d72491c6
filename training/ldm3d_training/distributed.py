"""Devices and the process group: cpu (gloo), cuda (NCCL), hpu (Gaudi, HCCL), one process or many under torchrun.

torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; a plain ``ldm3d-train`` call is
one process without a process group. Habana's packages are imported only when ``--device hpu`` is chosen, and their
absence is a clear error. Habana's current guidance is eager mode + ``torch.compile(backend="hpu_backend")``
(``PT_HPU_LAZY_MODE=0``); under the legacy lazy mode (``PT_HPU_LAZY_MODE=1``) :meth:`Dist.mark_step` is called after
``backward()`` and after ``optimizer.step()``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from dataclasses import dataclass

from ldm3d.errors import FailedPrecondition

log = logging.getLogger(__name__)

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "hpu": "hccl"}


@dataclass
class Dist:
    device_kind: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    htcore: object = None  # habana_frameworks.torch.core under --device hpu
    lazy: bool = False  # Habana lazy mode: mark_step() after backward and after the optimizer step

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device(self):
        import torch

        if self.device_kind == "cuda":
            return torch.device("cuda", self.local_rank)
        return torch.device(self.device_kind)

    def mark_step(self) -> None:
        if self.htcore is not None and self.lazy:
            self.htcore.mark_step()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as td

            td.barrier()

    def all_gather_object(self, obj) -> list:
        if not self.distributed:
            return [obj]
        import torch.distributed as td

        out = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        if not self.distributed:
            return obj
        import torch.distributed as td

        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def autocast(self, precision: str):
        import torch

        if precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_kind, dtype=torch.bfloat16)

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()


def setup(device: str) -> Dist:
    """Pick the device, import its backend, and join the process group when launched by torchrun."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dist = Dist(device, rank, world, local_rank)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise FailedPrecondition("--device cuda: torch sees no CUDA device (this torch is "
                                     f"{torch.__version__}); use --device cpu, or install a CUDA build of torch")
        torch.cuda.set_device(local_rank)
    elif device == "hpu":
        try:
            import habana_frameworks.torch.core as htcore
            if world > 1:
                import habana_frameworks.torch.distributed.hccl  # noqa: F401 - registers the hccl backend
        except ImportError as exc:
            raise FailedPrecondition(
                f"--device hpu needs Habana's PyTorch packages (habana_frameworks; {exc}): run inside Habana's "
                "PyTorch container or install the SynapseAI wheels (they are not on PyPI); or use --device cpu/cuda"
            ) from None
        dist.htcore = htcore
        dist.lazy = os.environ.get("PT_HPU_LAZY_MODE", "0") == "1"
    if world > 1:
        import torch.distributed as td

        td.init_process_group(BACKENDS[device], rank=rank, world_size=world, timeout=_dt.timedelta(minutes=30))
        log.info("rank %d/%d joined the %s process group", rank, world, BACKENDS[device])
    return dist
