# syntax=docker/dockerfile:1
# The image every Deployment in k8s/ runs: entrypoint `ldm3d`, arguments `serve <service> ...` (docs/kubernetes.md).
#
#   docker build -t ldm3d:0.1.0 .
#   docker run --rm -p 50051:50051 -v $PWD/demo/repository:/models:ro ldm3d:0.1.0 serve all --repository /models
#
# Needs network access to PyPI, the PyTorch CPU wheel index and Debian (a normal CI runner). It was not built on the
# machine this project is developed on, which cannot pull base images (docs/kubernetes.md, "What was run").

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtualenv with ldm3d and its serving, rendering and Triton-client extras ----------------------
FROM ${PYTHON_IMAGE} AS build
# torch from the CPU-only index: PyPI's Linux wheel is the CUDA build, gigabytes of nvidia-* libraries that the
# services never use (models run in ONNX Runtime or in Triton; torch only builds schedulers and reference paths).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first, then everything else under the constraints (torch==2.13.0, protobuf<7: see constraints.txt), so
# that nothing replaces the CPU torch and pip cannot settle on an old tritonclient.
COPY constraints.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY services ./services
COPY training ./training
# Non-editable: the image carries the built package, not the source tree. The `triton` extra holds the Triton
# runtime's client (components/triton), `jobs` the durable job queue, `train` ldm3d-train (components/training).
# open-clip-torch only for the CLIP BPE file it ships (`ldm3d make-tiny-model`) and lpips only for LPIPS'
# linear-head weights: neither is imported, and their dependencies would pull torchvision.
RUN pip install -c constraints.txt ".[serve,render,triton,jobs,train]" \
 && pip install --no-deps open-clip-torch==3.3.0 lpips==0.1.4 \
 && ldm3d serve --help >/dev/null

# ---- runtime ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# ffmpeg (+ffprobe, libx264): render videos; exiftool: 360/stereo metadata in MP4; libusb, libGL, libEGL, libX11,
# libudev: what open3d 0.20's libOpen3D.so links against (it does not import without them). Not pinned: Debian
# stable moves these only for security fixes, which a rebuild should pick up.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ffmpeg libimage-exiftool-perl libusb-1.0-0 libgl1 libegl1 libx11-6 libudev1 \
 && rm -rf /var/lib/apt/lists/*
# The unprivileged user the Deployments run as (runAsUser/runAsGroup 10001 in k8s/base; tests/k8s checks they agree).
RUN groupadd --system --gid 10001 ldm3d \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ldm3d
COPY --from=build /opt/venv /opt/venv
# The root filesystem is read-only in Kubernetes: caches and scratch go to /tmp (an emptyDir there), and no model
# is ever fetched from a hub at run time (models come from the repository volume).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
# gRPC (LDM3D_PORT) and Prometheus /metrics (LDM3D_METRICS_PORT)
EXPOSE 50051 9464
ENTRYPOINT ["ldm3d"]
CMD ["serve", "all", "--repository", "/models"]
