"""Serve a model repository with the CPU tritonserver (Python backend) that ``scripts/triton/setup.sh`` installs.

    bash scripts/triton/setup.sh                                   # once: .triton/ (tritonserver + its venv)
    python -m ldm3d.repository.triton_cpu --repository model_repository --grpc-port 8001
    ldm3d generate --repository model_repository --runtime triton --triton-url localhost:8001 ...

The committed ``config.pbtxt`` files are the GPU-ready ``onnxruntime_onnx`` ones, which this CPU build cannot run
(it has only the Python backend). So we derive a second repository: same model names, tensors, batching and
version policy, ``backend: "python"``, and each version folder holding ``scripts/triton/model.py`` beside symbolic
links to the very same ONNX files and manifest. Every version is verified against its manifest before it is linked.
On a GPU host, point the official Triton image at the original repository instead (docs/runtime.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import FailedPrecondition, NotFound, Unavailable
from .config import write_config
from .layout import CONFIG, ModelRepository
from .manifest import verify_or_raise
from .pbtxt import Enum

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
TRITON_HOME = PROJECT_ROOT / ".triton"
PYTHON_MODEL = PROJECT_ROOT / "scripts" / "triton" / "model.py"


def build_cpu_repository(source: str | Path, dest: str | Path, python_model: Path = PYTHON_MODEL,
                         verify: bool = True) -> list[str]:
    """Write the Python-backend twin of ``source`` into ``dest`` (replaced); returns the model names."""
    repo = ModelRepository(source)
    dest = Path(dest)
    if not python_model.is_file():
        raise NotFound(f"{python_model}: the Python-backend model file is missing (it ships in scripts/triton/)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    models = repo.models()
    for model in models:
        cfg = dict(repo.config(model).raw)
        cfg.pop("platform", None)
        cfg = {"name": model, "backend": "python", **{k: v for k, v in cfg.items() if k != "name"}}
        cfg["instance_group"] = [{"count": g.get("count", 1), "kind": Enum("KIND_CPU")}
                                 for g in cfg.get("instance_group", [{"count": 1}])]
        (tmp / model).mkdir()
        write_config(tmp / model / CONFIG, cfg)
        for version in repo.versions(model):
            src = repo.version_dir(model, version)
            if verify:
                verify_or_raise(src, model, version)
            out = tmp / model / str(version)
            out.mkdir()
            for item in src.iterdir():
                (out / item.name).symlink_to(item.resolve())
            shutil.copy2(python_model, out / "model.py")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return models


def sync_cpu_repository(source: str | Path, dest: str | Path, python_model: Path = PYTHON_MODEL) -> list[str]:
    """Add to an existing twin ``dest`` every version folder of ``source`` it lacks (a publish since it was built),
    each written beside and renamed into place; returns ``model/version`` of each folder added. Folders already
    there are left alone (Triton may be serving them); ``ldm3d.servers`` verifies each version before loading it."""
    repo, dest = ModelRepository(source), Path(dest)
    added = []
    for model in repo.models():
        if not (dest / model / CONFIG).is_file():
            continue  # a new model needs its config: rebuild the twin with build_cpu_repository
        for version in repo.versions(model):
            out = dest / model / str(version)
            if out.exists():
                continue
            staging = dest / model / f".staging-{version}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for item in repo.version_dir(model, version).iterdir():
                (staging / item.name).symlink_to(item.resolve())
            shutil.copy2(python_model, staging / "model.py")
            staging.rename(out)
            added.append(f"{model}/{version}")
    return added


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """A ``tritonserver`` process on loopback ports, models loaded and unloaded explicitly (``--model-control-mode
    explicit``). Use as a context manager; :meth:`stop` terminates it."""

    def __init__(self, repository: str | Path, grpc_port: int | None = None, http_port: int | None = None,
                 load: list[str] | None = None, home: Path = TRITON_HOME, log_file: Path | None = None,
                 address: str = "127.0.0.1"):
        self.repository = Path(repository)
        self.home = Path(home)
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.address = address
        self.load = list(load or [])
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @staticmethod
    def installed(home: Path = TRITON_HOME) -> bool:
        return (home / ".complete").is_file() and (home / "tritonserver" / "bin" / "tritonserver").is_file()

    def command(self) -> list[str]:
        server = self.home / "tritonserver"
        cmd = [str(server / "bin" / "tritonserver"), f"--model-repository={self.repository}",
               f"--backend-directory={server / 'backends'}", "--model-control-mode=explicit",
               f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
               f"--http-address={self.address}", f"--http-port={self.http_port}", "--allow-metrics=false",
               "--exit-timeout-secs=5", "--log-verbose=0"]
        return cmd + [f"--load-model={m}" for m in self.load]

    def start(self, timeout_s: float = 60.0) -> TritonServer:
        if not self.installed(self.home):
            raise FailedPrecondition(f"no tritonserver in {self.home}: run `bash scripts/triton/setup.sh` first")
        env = dict(os.environ)
        # source env.sh: the venv's python on PATH for the stub, libpython and the wheel's libraries on the loader path
        exported = subprocess.run(["bash", "-c", f"source {self.home / 'env.sh'} && env -0"], capture_output=True,
                                  check=True, env=env).stdout.split(b"\0")
        env = dict(e.decode().split("=", 1) for e in exported if b"=" in e)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), env=env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self._wait_live(timeout_s)
        return self

    def _wait_live(self, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise Unavailable(f"tritonserver exited with code {self.process.returncode} while starting "
                                      f"(log: {self.log_file or 'not kept'})")
                try:
                    if client.is_server_live():
                        if all(client.is_model_ready(m) for m in self.load):
                            return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        self.stop()
        raise Unavailable(f"tritonserver did not become ready on {self.url} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def __enter__(self):
        return self.start() if self.process is None else self

    def __exit__(self, *exc):
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve a model repository with the CPU tritonserver (Python backend).")
    ap.add_argument("--repository", default="model_repository", help="repository written by `ldm3d export`")
    ap.add_argument("--cpu-repository", default=str(TRITON_HOME / "repository"),
                    help="where the Python-backend twin is written (default .triton/repository)")
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--address", default="127.0.0.1", help="listen address (loopback by default)")
    ap.add_argument("--no-load", action="store_true", help="start with no model loaded (load them over gRPC)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    models = build_cpu_repository(args.repository, args.cpu_repository)
    server = TritonServer(args.cpu_repository, args.grpc_port, args.http_port, [] if args.no_load else models,
                          address=args.address)
    # the server runs in its own session (so Ctrl-C in a terminal reaches only us): forward SIGTERM/SIGINT to it
    def _stop(signum, _frame):
        server.stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)
    server.start(timeout_s=300)
    print(f"tritonserver serving {', '.join(models)} from {args.repository} on grpc {server.url} (Ctrl-C stops it)",
          flush=True)
    try:
        return server.process.wait()
    except KeyboardInterrupt:
        server.stop()
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
