#!/usr/bin/env bash
# Vendor three.js for the web viewer (`ldm3d view`): the page ships its JavaScript in the package, no CDN.
# Reproduces services/ldm3d/viewer/static/vendor/three/ from the npm registry:
#   bash scripts/vendor_three.sh            # re-vendor the pinned version; `git diff` should then be empty
# The tarball is checked against the registry's pinned sha512 integrity before anything is copied, and
# VERSION.json records the version, the tarball's sha256 and every vendored file's sha256 (a test re-checks those).
set -euo pipefail
VERSION=0.187.0
INTEGRITY="sha512-Qiu7R+Cmh8CstZsY1uJOSWnVlfo7ZtNLV7mF8Jltk3LB3AtDu9cRZlcnRKkAk8Y4z6KKw35z7Y7Urd7jWY8etA=="
DEST="$(cd "$(dirname "$0")/.." && pwd)/services/ldm3d/viewer/static/vendor/three"
# what the viewer imports (three.module.js imports three.core.js; GLTFLoader imports the two utils)
FILES=(LICENSE build/three.module.js build/three.core.js
       examples/jsm/loaders/GLTFLoader.js examples/jsm/utils/BufferGeometryUtils.js
       examples/jsm/utils/SkeletonUtils.js examples/jsm/webxr/VRButton.js)

TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "three@$VERSION" >/dev/null)
TGZ="$TMP/three-$VERSION.tgz"
GOT="sha512-$(openssl dgst -sha512 -binary "$TGZ" | base64 -w0)"
[ "$GOT" = "$INTEGRITY" ] || { echo "three@$VERSION: integrity $GOT != pinned $INTEGRITY" >&2; exit 1; }
tar -xzf "$TGZ" -C "$TMP"
rm -rf "$DEST"; mkdir -p "$DEST"
for f in "${FILES[@]}"; do
  case "$f" in
    build/*) out="${f#build/}" ;;
    examples/jsm/*) out="addons/${f#examples/jsm/}" ;;
    *) out="$f" ;;
  esac
  mkdir -p "$DEST/$(dirname "$out")"; cp "$TMP/package/$f" "$DEST/$out"
done
python3 - "$DEST" "$VERSION" "$INTEGRITY" "$(sha256sum "$TGZ" | cut -d' ' -f1)" <<'PY'
import hashlib, json, pathlib, sys
dest, version, integrity, tgz = pathlib.Path(sys.argv[1]), *sys.argv[2:]
files = {str(p.relative_to(dest)): hashlib.sha256(p.read_bytes()).hexdigest()
         for p in sorted(dest.rglob("*")) if p.is_file() and p.name != "VERSION.json"}
(dest / "VERSION.json").write_text(json.dumps({
    "package": "three", "version": version, "license": "MIT", "source": f"npm pack three@{version}",
    "npm_integrity": integrity, "tarball_sha256": tgz, "files_sha256": files}, indent=2) + "\n")
PY
echo "vendored three@$VERSION into $DEST"
