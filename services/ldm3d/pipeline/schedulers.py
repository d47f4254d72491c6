"""Scheduler names the CLI and the API accept, mapped to diffusers scheduler classes (a short table, no if/elif)."""

from __future__ import annotations

import threading

from ..errors import InvalidArgument

# diffusers imports its classes lazily on first attribute access, and that is not thread-safe: two requests
# creating their first DPM++ scheduler at once in a fresh server saw "module 'diffusers' has no attribute ...".
_IMPORT_LOCK = threading.Lock()

# name → (diffusers class, config overrides). Each is built from the checkpoint's own scheduler config, as
# diffusers' `Scheduler.from_config(pipe.scheduler.config)` does, so betas and offsets follow the checkpoint.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
}
_BY_CLASS = {cls: name for name, (cls, _) in SCHEDULERS.items()}


def name_of(class_name: str) -> str:
    """Our name for a diffusers scheduler class name ("PNDMScheduler" → "pndm"); the class name if unknown."""
    return _BY_CLASS.get(class_name, class_name)


def check_name(name: str, field: str = "scheduler") -> str:
    if name not in SCHEDULERS:
        raise InvalidArgument(
            f"{field}={name!r} is not a known scheduler: use one of {', '.join(SCHEDULERS)}", field=field
        )
    return name


def create_scheduler(name: str, base_config: dict):
    """A fresh scheduler instance (schedulers are stateful: one per generation)."""
    cls_name, overrides = SCHEDULERS[check_name(name)]
    with _IMPORT_LOCK:
        import diffusers

        cls = getattr(diffusers, cls_name)
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    if base_config.get("_class_name") == cls_name:
        return cls.from_config(config)
    return cls.from_config({**config, **overrides})
