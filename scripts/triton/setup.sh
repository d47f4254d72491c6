#!/usr/bin/env bash
# Install a CPU tritonserver (Python backend only) under .triton/ for tests and local serving. Idempotent.
#
#     bash scripts/triton/setup.sh            # or: make triton
#
# nvidia-pytriton 0.7.0 bundles tritonserver 2.51 with the Python backend; it needs numpy<2, so it lives in its own
# venv (.triton/venv), apart from the project's. The Python-backend models that serve our ONNX files run
# onnxruntime inside that same venv. Result:
#     .triton/venv/                 python 3.11 venv: nvidia-pytriton, numpy<2, onnxruntime
#     .triton/tritonserver/bin/tritonserver, .triton/tritonserver/backends/python/triton_python_backend_stub
#     .triton/env.sh                PATH / LD_LIBRARY_PATH to source before starting the server
# On GPU hosts use the official Triton image instead (see docs/runtime.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${TRITON_HOME:-$ROOT/.triton}"
PYTHON="${PYTHON:-python3.11}"
PYTRITON_VERSION="0.7.0"

if [[ -x "$DEST/tritonserver/bin/tritonserver" && -f "$DEST/env.sh" && -f "$DEST/.complete" ]]; then
    echo "tritonserver already set up in $DEST"
    exit 0
fi

if ! command -v "$PYTHON" >/dev/null; then
    echo "setup.sh: $PYTHON not found; the bundled Python-backend stub is built for CPython 3.11 (set PYTHON=...)" >&2
    exit 1
fi
PYVER="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [[ "$PYVER" != "3.11" && "$PYVER" != "3.10" && "$PYVER" != "3.12" ]]; then
    echo "setup.sh: $PYTHON is Python $PYVER; nvidia-pytriton ships stubs for 3.8-3.12 only" >&2
    exit 1
fi

mkdir -p "$DEST"
if [[ ! -x "$DEST/venv/bin/python" ]]; then
    "$PYTHON" -m venv "$DEST/venv"
fi
"$DEST/venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-pytriton==$PYTRITON_VERSION" "numpy<2" "onnxruntime>=1.20,<1.33" 2>&1 | grep -v "^WARNING: Location" || true

SITE="$("$DEST/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
PYLIB="$("$DEST/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
SRC="$SITE/pytriton/tritonserver"
STUB="$SITE/pytriton/tritonserver/python_backend_stubs/$PYVER/triton_python_backend_stub"
[[ -x "$SRC/bin/tritonserver" ]] || { echo "setup.sh: $SRC/bin/tritonserver missing from the wheel" >&2; exit 1; }
[[ -f "$STUB" ]] || { echo "setup.sh: no Python-backend stub for Python $PYVER in the wheel ($STUB)" >&2; exit 1; }

rm -rf "$DEST/tritonserver"
cp -a "$SRC" "$DEST/tritonserver"
cp "$STUB" "$DEST/tritonserver/backends/python/triton_python_backend_stub"
chmod +x "$DEST/tritonserver/backends/python/triton_python_backend_stub"

cat > "$DEST/env.sh" <<ENV
# source me: the environment tritonserver and its Python-backend stub need
export PATH="$DEST/venv/bin:\$PATH"
export LD_LIBRARY_PATH="$PYLIB:$SITE/nvidia_pytriton.libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
# --help exits non-zero; it starting at all proves the shared libraries resolve
HELP="$(source "$DEST/env.sh" && "$DEST/tritonserver/bin/tritonserver" --help 2>&1 || true)"
[[ "$HELP" == *"Usage: tritonserver"* ]] || \
    { echo "setup.sh: tritonserver does not start (missing shared libraries?)" >&2; exit 1; }
touch "$DEST/.complete"
echo "tritonserver ready: $DEST/tritonserver/bin/tritonserver (source $DEST/env.sh first)"
