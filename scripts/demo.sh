#!/usr/bin/env bash
# The main job, offline, on a tiny random-weight model (no hub is needed): `make demo` runs this with .venv/bin on PATH.
#   1. build a tiny LDM3D checkpoint                (ldm3d make-tiny-model)
#   2. text -> RGB + 16-bit depth, torch runtime    (ldm3d generate --model)
#   3. export to a Triton model repository (ONNX)   (ldm3d export, ldm3d models list/verify)
#   4. text -> RGBD on the embedded ONNX Runtime    (ldm3d generate --repository)
#   5. the same through the gRPC platform           (ldm3d serve all + ldm3d generate --server)
#   6. RGBD -> ODS still, orbit MP4, .glb mesh      (ldm3d render)
#   7. text -> seamless 360 RGBD panorama -> ODS still, 360 stereo MP4, .glb and a viewer page   (ldm3d pano)
set -euo pipefail
OUT="${1:-demo}"
PROMPT="${2:-a cozy wooden cabin in a snowy pine forest at dusk}"
GEN=(--prompt "$PROMPT" --seed 42 --steps 25 --scheduler ddim --stem cabin)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a tiny random-weight LDM3D checkpoint (diffusers layout, real CLIP tokenizer)"
[ -f "$OUT/tiny/model_index.json" ] || ldm3d make-tiny-model "$OUT/tiny"

step "2. text -> RGBD with the torch runtime (the diffusers modules, in-process)"
ldm3d generate --model "$OUT/tiny" "${GEN[@]}" --out "$OUT/out-torch"

step "3. export to ONNX into a Triton model repository, then list and verify it"
[ -d "$OUT/repository/unet/1" ] || ldm3d export --model "$OUT/tiny" --repository "$OUT/repository"
ldm3d models list --repository "$OUT/repository"
ldm3d models verify --repository "$OUT/repository"

step "4. text -> RGBD on the embedded ONNX Runtime (the serving default)"
ldm3d generate --repository "$OUT/repository" "${GEN[@]}" --out "$OUT/out"

step "5. the same job through the platform: ldm3d serve all (gRPC) + ldm3d generate --server"
ldm3d serve all --host 127.0.0.1 --port 0 --metrics-port off --repository "$OUT/repository" \
    >"$OUT/serve.out" 2>"$OUT/serve.log" &
SERVER=$!; trap 'kill "$SERVER" 2>/dev/null || true' EXIT
until grep -q "listening on" "$OUT/serve.out"; do kill -0 "$SERVER"; sleep 0.2; done
ADDR=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$OUT/serve.out")
ldm3d generate --server "$ADDR" "${GEN[@]}" --out "$OUT/out-platform"
cmp "$OUT/out/cabin_depth.png" "$OUT/out-platform/cabin_depth.png" \
    && cmp "$OUT/out/cabin_rgb.png" "$OUT/out-platform/cabin_rgb.png" \
    && echo "platform output == in-process output (bit for bit)"
kill -TERM "$SERVER"; wait "$SERVER"; trap - EXIT

step "6. RGBD -> 360: an ODS stereo still (left eye on top), a camera-move MP4 and a textured .glb"
ldm3d render --rgb "$OUT/out/cabin_rgb.png" --depth "$OUT/out/cabin_depth.png" --out "$OUT/render" \
    --ods --path orbit --seconds 2 --fps 12 --size 640x360 --mesh glb

step "7. text -> a seamless 360 RGBD panorama -> ODS still, 360 stereo MP4, .glb mesh and the viewer page"
ldm3d pano --model "$OUT/tiny" --prompt "$PROMPT" --out "$OUT/pano" --height 256 --width 512 --seed 42 \
    --steps 10 --scheduler ddim --seconds 2 --fps 12 --size 640x360

printf '\nDone. Outputs are in %s/. (Random weights: the images are noise-like; real checkpoints load the same way.)\n' "$OUT"
printf '\nLook around the 360 scene in your browser:\n    %s view %s/pano      # then open http://127.0.0.1:8360/\n' \
    "$(command -v ldm3d)" "$OUT"
