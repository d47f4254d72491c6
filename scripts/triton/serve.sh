#!/usr/bin/env bash
# Serve a model repository with a real tritonserver on this CPU host (Python backend running our ONNX files).
#
#     bash scripts/triton/serve.sh demo/repository                 # gRPC on 127.0.0.1:8001, every model loaded
#     bash scripts/triton/serve.sh model_repository --grpc-port 9001 --no-load
#     ldm3d generate --repository demo/repository --runtime triton --triton-url localhost:8001 --prompt "..."
#
# Installs the server on first use (scripts/triton/setup.sh), writes the Python-backend twin of the repository into
# .triton/repository, and runs tritonserver in the foreground (Ctrl-C stops it). On GPU hosts run the official
# image on the repository itself instead (docs/runtime.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON_BIN:-$ROOT/.venv/bin/python}"
REPOSITORY="${1:-model_repository}"
shift || true

bash "$ROOT/scripts/triton/setup.sh"
exec "$PY" -m ldm3d.repository.triton_cpu --repository "$REPOSITORY" "$@"
