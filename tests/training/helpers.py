"""Helpers shared by the training tests (data sets, the CLI in-process, metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(folder: Path, n: int, seed: int = 0, size=(40, 48), depth: bool = True) -> list[dict]:
    """``n`` random RGB PNGs (+ 16-bit depth PNGs); returns JSONL rows with paths relative to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        h, w = size
        # smooth images (a gradient plus noise) so that a few steps of training visibly reduce the loss
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) * 200 + rng.random((h, w, 3)) * 55
        Image.fromarray(base.astype(np.uint8)).save(folder / f"img{i}.png")
        row = {"caption": f"a test scene number {i}", "image": f"img{i}.png"}
        if depth:
            d = (yy / h * 60000 + rng.random((h, w)) * 5000).astype(np.uint16)
            Image.fromarray(d).save(folder / f"img{i}_depth.png")
            row["depth"] = f"img{i}_depth.png"
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list, extra_lines: list[str] = ()) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))
    return path


def train_cli(*args: str) -> int:
    from ldm3d_training.cli import main

    return main([str(a) for a in args])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


FAST = ("--no-progress", "--validate-every", "-1", "--checkpoint-every", "1000")
