"""Triton ``config.pbtxt`` (protobuf text format of ``inference.ModelConfig``) as plain Python data.

A message is a ``dict``; a repeated field is a ``list``; scalars are ``int``/``float``/``str``/``bool``; enum values
(``TYPE_FP32``, ``KIND_CPU``) are kept as :class:`Enum` strings so that they are written back without quotes.
This is the small subset of the text format that model configs use (messages, repeated fields, ``[...]`` lists,
``map`` entries written as repeated ``{ key value }`` messages, comments). It needs neither protobuf nor tritonclient,
so the embedded runtime reads configs with the core dependencies only; the tests check what it writes against
Triton's own ``model_config.proto`` through ``google.protobuf.text_format``.
"""

from __future__ import annotations

import re

from ..errors import InvalidArgument

# fields that are repeated in ModelConfig and its sub-messages even when they appear once
REPEATED = {"input", "output", "dims", "instance_group", "versions", "preferred_batch_size", "shape", "gpus",
            "parameters", "model_warmup", "batch_input", "batch_output", "kind_list"}


class Enum(str):
    """An enum identifier (written bare, not quoted)."""


_TOKEN = re.compile(r"""\s*(?:(\#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{}\[\]:,;<>])|([^\s{}\[\]:,;<>"'#]+))""")


def _tokens(text: str, source: str):
    pos = 0
    while True:
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip():
                raise InvalidArgument(f"{source}: cannot parse config.pbtxt near {text[pos:pos + 40]!r}")
            return
        pos = m.end()
        if m.group(1):
            continue
        if m.group(2):
            yield ("str", bytes(m.group(2)[1:-1], "utf-8").decode("unicode_escape"))
        elif m.group(3):
            yield ("punct", m.group(3))
        else:
            yield ("word", m.group(4))


def _scalar(kind: str, tok: str):
    if kind == "str":
        return tok
    if tok in ("true", "True"):
        return True
    if tok in ("false", "False"):
        return False
    try:
        return int(tok, 0)
    except ValueError:
        pass
    try:
        return float(tok)
    except ValueError:
        return Enum(tok)


def loads(text: str, source: str = "config.pbtxt") -> dict:
    """Parse a config.pbtxt into nested dicts/lists. Raises ``InvalidArgument`` naming ``source`` on bad syntax."""
    toks = list(_tokens(text, source))
    pos = 0

    def fail(msg):
        raise InvalidArgument(f"{source}: {msg}")

    def message(closing):
        nonlocal pos
        out: dict = {}
        while True:
            if pos >= len(toks):
                if closing is None:
                    return out
                fail(f"missing {closing!r}")
            kind, tok = toks[pos]
            if kind == "punct" and tok == closing:
                pos += 1
                return out
            if kind == "punct" and tok in ",;":
                pos += 1
                continue
            if kind != "word":
                fail(f"expected a field name, got {tok!r}")
            name = tok
            pos += 1
            if pos < len(toks) and toks[pos] == ("punct", ":"):
                pos += 1
            value = val()
            if name in REPEATED or name in out:
                prev = out.get(name, [])
                prev = prev if isinstance(prev, list) else [prev]
                out[name] = prev + (value if isinstance(value, list) else [value])
            else:
                out[name] = value

    def val():
        nonlocal pos
        if pos >= len(toks):
            fail("unexpected end of file")
        kind, tok = toks[pos]
        pos += 1
        if kind == "punct" and tok in "{<":
            return message("}" if tok == "{" else ">")
        if kind == "punct" and tok == "[":
            items = []
            while True:
                if pos >= len(toks):
                    fail("missing ']'")
                if toks[pos] == ("punct", "]"):
                    pos += 1
                    return items
                if toks[pos] == ("punct", ","):
                    pos += 1
                    continue
                items.append(val())
        if kind == "punct":
            fail(f"unexpected {tok!r}")
        return _scalar(kind, tok)

    return message(None)


def dumps(config: dict) -> str:
    """Write nested dicts/lists as config.pbtxt text (stable field order: the dict's)."""
    lines: list[str] = []

    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, Enum):
            return str(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    def emit(msg: dict, indent: str) -> None:
        for key, value in msg.items():
            if isinstance(value, dict):
                lines.append(f"{indent}{key} {{")
                emit(value, indent + "  ")
                lines.append(f"{indent}}}")
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                lines.append(f"{indent}{key} [")
                for i, item in enumerate(value):
                    lines.append(f"{indent}  {{")
                    emit(item, indent + "    ")
                    lines.append(f"{indent}  }}" + ("," if i < len(value) - 1 else ""))
                lines.append(f"{indent}]")
            elif isinstance(value, list):
                lines.append(f"{indent}{key}: [ {', '.join(scalar(v) for v in value)} ]")
            else:
                lines.append(f"{indent}{key}: {scalar(value)}")

    emit(config, "")
    return "\n".join(lines) + "\n"
