"""Every serving option is declared once (a ServeConfig field) and reaches the code that reads it."""

from __future__ import annotations

import argparse
import ast
from dataclasses import fields
from pathlib import Path

import ldm3d
from ldm3d.servers.config import OPTIONS, ServeConfig, add_arguments

PACKAGE = Path(ldm3d.__file__).resolve().parent


def _attributes_read(exclude: Path) -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        if path == exclude:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
    return names


def test_each_option_is_declared_once_and_read_outside_the_config():
    declared = [f.name for f in fields(ServeConfig) if "option" in f.metadata]
    assert declared == list(OPTIONS) and len(set(o.flag for o in OPTIONS.values())) == len(OPTIONS)
    config = PACKAGE / "servers" / "config.py"
    read = _attributes_read(config)
    # an option read only through one of ServeConfig's own properties (runtime_options, remote, render_limits)
    # counts as read when the property is
    for node in ast.walk(ast.parse(config.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name in read and any(
                isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list):
            read |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    unread = [name for name in declared if name not in read]
    assert unread == [], f"options no code reads: {unread}"


def test_text_cache_size_sizes_the_pipelines_text_cache(tiny_model):
    from ldm3d.servers.models import ModelRegistry

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = ServeConfig.from_args(parser.parse_args(["--checkpoint", str(tiny_model)]),
                                env={"LDM3D_TEXT_CACHE_SIZE": "1"})
    assert cfg.text_cache_size == 1
    text = ModelRegistry(cfg).default().require_pipeline().text
    assert text.cache_size == 1
    text.encode(["a"])
    text.encode(["b"])
    text.encode(["a"])  # evicted by "b": encoded again, not a hit
    assert text.cache_hits == 0
    text.encode(["a"])
    assert text.cache_hits == 1
