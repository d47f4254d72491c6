"""The committed ``ldm3d.v1`` code is what the .proto files generate, and the contract's fixed names hold."""

from __future__ import annotations

import subprocess
import importlib.util
import sys
from pathlib import Path

from google.protobuf import json_format

from ldm3d.v1 import studio_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_regenerating_changes_nothing():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"run `python scripts/gen_protos.py` and commit:\n{proc.stderr}"


def test_generate_request_json_names_are_the_cli_names():
    fields = {f.json_name for f in studio_pb2.GenerateRequest.DESCRIPTOR.fields}
    required = {"prompt", "negativePrompt", "height", "width", "steps", "guidanceScale", "seed", "scheduler",
                "model", "version", "requestId"}
    assert required <= fields
    msg = json_format.Parse('{"prompt": "a cabin", "negativePrompt": "fog", "guidanceScale": 0}',
                            studio_pb2.GenerateRequest())
    # unset numeric fields keep presence, so "unset = the CLI's default" is distinguishable from an explicit 0
    assert msg.HasField("guidance_scale") and not msg.HasField("steps") and not msg.HasField("seed")


def test_every_message_and_field_is_documented():
    """protoc keeps comments in the descriptor's source info; every message and field must have one."""
    import tempfile

    from grpc_tools import protoc  # noqa: F401 - the generator must be importable
    from google.protobuf import descriptor_pb2

    # by file path: putting scripts/ on sys.path would let scripts/triton shadow the real `triton` package
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    gen_protos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_protos)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        shim = Path(tmp) / "shim"
        args = ["protoc", *gen_protos._includes(shim), "--include_source_info", f"--descriptor_set_out={out}",
                *sorted(str(p) for p in (ROOT / "protos/ldm3d/v1").glob("*.proto"))]
        assert protoc.main(args) == 0
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    missing = []
    for f in fds.file:
        comments = {tuple(loc.path): loc.leading_comments + loc.trailing_comments
                    for loc in f.source_code_info.location}
        for i, m in enumerate(f.message_type):
            if not comments.get((4, i), "").strip():
                missing.append(f"{f.name}: message {m.name}")
            for j, fld in enumerate(m.field):
                if not comments.get((4, i, 2, j), "").strip():
                    missing.append(f"{f.name}: {m.name}.{fld.name}")
        for i, e in enumerate(f.enum_type):
            if not comments.get((5, i), "").strip():
                missing.append(f"{f.name}: enum {e.name}")
        for i, s in enumerate(f.service):
            for j, rpc in enumerate(s.method):
                if not comments.get((6, i, 2, j), "").strip():
                    missing.append(f"{f.name}: {s.name}.{rpc.name}")
    assert not missing, "undocumented: " + ", ".join(missing)
