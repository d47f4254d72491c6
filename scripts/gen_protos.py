"""Regenerate the ``ldm3d.v1`` gRPC code from ``protos/ldm3d/v1/*.proto`` (committed; a test checks it is current).

    python scripts/gen_protos.py           # rewrite services/ldm3d/v1/*_pb2*.py(i)
    python scripts/gen_protos.py --check   # exit 1 and list the files that would change

Equivalent to ``python -m grpc_tools.protoc -I protos -I <well-known types> -I <googleapis-common-protos>
--python_out=services --grpc_python_out=services --pyi_out=services protos/ldm3d/v1/*.proto``; the two extra include
folders are the ones shipped by grpcio-tools (google/protobuf/*.proto) and googleapis-common-protos
(google/longrunning, google/rpc), whose Python modules the generated code imports.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUT = ROOT / "services"
PACKAGE = Path("ldm3d") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _includes(shim: Path) -> list[str]:
    import google.longrunning  # googleapis-common-protos ships its .proto files next to the modules
    import grpc_tools

    wkt = importlib.resources.files(grpc_tools) / "_proto"
    googleapis = Path(google.longrunning.__path__[0]).parents[1]
    # googleapis-common-protos ships google/longrunning/operations.proto as operations_proto.proto, while its
    # compiled module registers the original name (and `google.longrunning.operations_pb2` imports it): expose the
    # file under its real name, first on the path, so our imports resolve to the module that is installed.
    (shim / "google" / "longrunning").mkdir(parents=True)
    shutil.copyfile(googleapis / "google/longrunning/operations_proto.proto", shim / "google/longrunning/operations.proto")
    return [f"-I{PROTOS}", f"-I{shim}", f"-I{wkt}", f"-I{googleapis}"]


def generate(out: Path) -> list[Path]:
    """Run protoc into ``out`` (a ``services``-like root) and return the generated files."""
    from grpc_tools import protoc

    sources = sorted(str(p) for p in (PROTOS / PACKAGE).glob("*.proto"))
    shim = out / "_include"
    args = ["grpc_tools.protoc", *_includes(shim), f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}"]
    if protoc.main(args + sources) != 0:
        raise SystemExit("protoc failed (see above)")
    shutil.rmtree(shim)
    return sorted(p for p in (out / PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the committed code is current")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        target = OUT / PACKAGE
        current = {p.name for p in target.glob("*") if p.name.endswith(GENERATED_SUFFIXES)}
        stale = [p.name for p in fresh if not (target / p.name).exists() or not filecmp.cmp(p, target / p.name, False)]
        extra = sorted(current - {p.name for p in fresh})
        if args.check:
            for name in stale + extra:
                print(f"out of date: services/{PACKAGE}/{name}", file=sys.stderr)
            return 1 if stale or extra else 0
        for name in extra:
            (target / name).unlink()
        for p in fresh:
            shutil.copyfile(p, target / p.name)
    print(f"generated {len(fresh)} files in services/{PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
