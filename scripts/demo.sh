#!/usr/bin/env bash
# The main job, offline, on a tiny random-weight model (no hub is needed): `make demo` runs this with .venv/bin on PATH.
#   1. build a tiny LDM3D checkpoint            (ldm3d make-tiny-model)
#   2. text -> RGB + 16-bit depth, in-process   (ldm3d generate --model)
#   3. RGBD -> ODS still, orbit MP4, .glb mesh  (ldm3d render)
set -euo pipefail
OUT="${1:-demo}"
PROMPT="${2:-a cozy wooden cabin in a snowy pine forest at dusk}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a tiny random-weight LDM3D checkpoint (diffusers layout, real CLIP tokenizer)"
[ -f "$OUT/tiny/model_index.json" ] || ldm3d make-tiny-model "$OUT/tiny"

step "2. text -> RGBD with the torch runtime"
ldm3d generate --model "$OUT/tiny" --prompt "$PROMPT" --seed 42 --steps 25 --scheduler ddim --out "$OUT/out" --stem cabin

step "3. RGBD -> 360: an ODS stereo still (left eye on top), a camera-move MP4 and a textured .glb"
ldm3d render --rgb "$OUT/out/cabin_rgb.png" --depth "$OUT/out/cabin_depth.png" --out "$OUT/render" \
    --ods --path orbit --seconds 2 --fps 12 --size 640x360 --mesh glb

printf '\nDone. Outputs are in %s/. (Random weights: the images are noise-like; real checkpoints load the same way.)\n' "$OUT"
