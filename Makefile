# The front door. `make demo` sets everything up in .venv/ and runs the main job offline on a tiny model;
# `make test` runs the test suite. Both install what they need (system packages too, when run as root).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip --disable-pip-version-check
DEMO    := demo
PROMPT  ?= a cozy wooden cabin in a snowy pine forest at dusk
APT_PKGS := ffmpeg libusb-1.0-0 libimage-exiftool-perl chromium redis-server

.PHONY: help venv system-deps triton demo test test-all bench protos clean

help:
	@echo "make demo      set up .venv/ and run text -> RGBD -> 360 (ldm3d pano) on a tiny offline model; then ldm3d view"
	@echo "make test      run the test suite (what CI runs)"
	@echo "make triton    install a CPU tritonserver under .triton/ (for --runtime triton and its tests)"
	@echo "make bench     run the benchmarks (bench/*.py); see bench/README.md"
	@echo "make protos    regenerate services/ldm3d/v1 from protos/"

venv: $(VENV)/.installed

# torch first, from the local CPU wheel, then everything else under constraints.txt (see the comments there).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[all]"
	# only for the CLIP BPE merges file it ships (open_clip itself is never imported: it would pull torchvision)
	$(PIP) install -q --no-deps open-clip-torch==3.3.0
	# only for LPIPS' linear-head weights (ldm3d-train autoencoder); `import lpips` would pull torchvision
	$(PIP) install -q --no-deps lpips==0.1.4
	touch $@

# ffmpeg (videos), libusb (open3d imports it), exiftool (360 video metadata), chromium (the viewer's browser tests,
# headless with software WebGL; playwright drives it, no browser download), redis-server (durable jobs: the tests
# start their own on a free port; scripts/redis.sh for development). Installed only if missing.
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v exiftool >/dev/null || missing="$$missing libimage-exiftool-perl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ldconfig -p | grep -q libusb-1.0 || missing="$$missing libusb-1.0-0"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	  else echo "please install:$$missing  (sudo apt-get install $(APT_PKGS))"; exit 1; fi; \
	fi

triton: venv
	bash scripts/triton/setup.sh

demo: venv system-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh "$(DEMO)" "$(PROMPT)"

test: venv system-deps triton
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

test-all: venv system-deps triton
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the quick set; the SD-size runs are in each script's --help (minutes each on 2 cores)
bench: venv system-deps
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/runtime.py --preset tiny
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/queue.py
	$(BIN)/python bench/train.py

protos: venv
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(DEMO) bench/out .pytest_cache
