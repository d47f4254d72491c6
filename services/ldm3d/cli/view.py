"""``ldm3d view``: look around a 360 RGBD scene in the browser.

    ldm3d pano --model demo/tiny --prompt "a cabin in the woods" --out demo/pano
    ldm3d view demo/pano                  # then open http://127.0.0.1:8360/ (drag to look around, W A S D to move)

Serves DIR (the --out folder of `ldm3d pano`, or of `ldm3d render --mesh glb`) with a self-contained page:
three.js ships in the package (no CDN), so it works offline. On a headset's browser, "Enter VR" shows it in stereo
(WebXR needs localhost or HTTPS: forward the port, e.g. `adb reverse tcp:8360 tcp:8360` on a Quest).
"""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("view", help="serve a render folder as an immersive 360 web page (three.js, WebXR)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="folder written by `ldm3d pano` (or `ldm3d render --mesh glb`)")
    p.add_argument("--port", type=int, default=8360, help="TCP port (0: a free one) (default: 8360)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1). 0.0.0.0 serves your network, but browsers "
                        "allow WebXR only on localhost or HTTPS: for a headset forward the port instead "
                        "(Quest: adb reverse tcp:8360 tcp:8360)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InvalidArgument
    from ..viewer import ViewerServer

    if not 0 <= args.port <= 65535:
        raise InvalidArgument(f"--port {args.port} is invalid: use 1 to 65535, or 0 for a free port", field="port")
    server = ViewerServer(args.dir, host=args.host, port=args.port)
    print(f"ldm3d view: listening on {server.url}  (serving {args.dir}; Ctrl-C to stop)", flush=True)
    if server.manifest.get("prompt"):
        print(f"  \"{server.manifest['prompt']}\"", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("ldm3d view: stopped", file=sys.stderr)
    finally:
        server.close()
    return 0
