"""The immersive web viewer of a render folder: a self-contained page (three.js ships in ``static/vendor/three``,
MIT, pinned and hashed in its ``VERSION.json``; ``scripts/vendor_three.sh`` reproduces it) that shows the displaced
sphere (``mesh.glb``) from inside, with drag to look around, a small head box to move in, WebXR "Enter VR", the ODS
still as a fallback without WebGL, and the panorama's prompt and parameters (``pano.json``).

    ldm3d view DIR [--port P]                 # serve DIR with the page at http://127.0.0.1:P/
    from ldm3d.viewer import write_viewer     # copy the page into DIR (what `ldm3d pano` does)
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InvalidArgument, NotFound

STATIC = Path(__file__).resolve().parent / "static"
MANIFEST = "pano.json"  # what the page reads: prompt, files, render and generation parameters
log = logging.getLogger(__name__)

# media types the page needs; module scripts must be served as JavaScript
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".css": "text/css",
          ".html": "text/html; charset=utf-8", ".glb": "model/gltf-binary", ".png": "image/png",
          ".mp4": "video/mp4", ".ply": "application/x-ply", "": "text/plain"}


def write_viewer(out_dir: str | Path) -> Path:
    """Copy the page into ``out_dir`` (``index.html`` + ``viewer/``) so the folder works from any static web server;
    returns the page's path. ``out_dir`` needs a ``pano.json`` (see :func:`folder_manifest`) beside it."""
    out = Path(out_dir)
    dest = out / "viewer"
    tmp = out / ".viewer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(STATIC, tmp, ignore=shutil.ignore_patterns("index.html", "__pycache__"))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    page = out / "index.html"
    shutil.copy2(STATIC / "index.html", page)
    return page


def folder_manifest(folder: str | Path) -> dict:
    """The folder's ``pano.json``; for a plain ``ldm3d render`` folder (no ``pano.json``), one made from its files.

    Raises ``NotFound`` for a missing folder and ``InvalidArgument`` when there is no ``mesh.glb`` to show."""
    root = Path(folder)
    if not root.is_dir():
        raise NotFound(f"DIR={str(folder)!r}: no such folder (give the --out folder of `ldm3d pano` or "
                       "`ldm3d render --mesh glb`)", field="DIR")
    path = root / MANIFEST
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{path} is not valid JSON ({exc}); run `ldm3d pano` again", field="DIR") from None
    else:
        files = {"mesh": "mesh.glb", "ods": "ods.png"}
        files.update({("video360" if p.stem.endswith("_360") else "video"): p.name for p in sorted(root.glob("*.mp4"))})
        manifest = {"prompt": "", "title": root.resolve().name, "files": files, "render": {}, "generation": {}}
    mesh = manifest.get("files", {}).get("mesh")
    if not mesh or not (root / mesh).is_file():
        raise InvalidArgument(f"DIR={str(folder)!r} has no {mesh or 'mesh.glb'}: make the folder with `ldm3d pano` "
                              "or `ldm3d render ... --mesh glb`", field="DIR")
    manifest["files"] = {k: v for k, v in manifest["files"].items() if v and (root / v).is_file()}
    return manifest


class _Handler(SimpleHTTPRequestHandler):
    """The folder's files, with the packaged page at ``/`` and its scripts under ``/viewer/``."""

    manifest_bytes: bytes = b"{}"

    def __init__(self, *args, directory: str, manifest_bytes: bytes, **kwargs):
        self.manifest_bytes = manifest_bytes
        super().__init__(*args, directory=directory, **kwargs)

    def translate_path(self, path: str) -> str:
        rel = unquote(urlsplit(path).path).lstrip("/")
        if rel in ("", "index.html"):
            return str(STATIC / "index.html")
        if rel.startswith("viewer/"):
            target = (STATIC / rel[len("viewer/"):]).resolve()
            return str(target) if target.is_relative_to(STATIC) and target.is_file() else str(STATIC / "missing")
        return super().translate_path(path)  # under the folder; '..' cannot leave it

    def guess_type(self, path) -> str:
        return _TYPES.get(Path(str(path)).suffix.lower(), "application/octet-stream")

    def do_GET(self):  # noqa: N802 - http.server's name
        if urlsplit(self.path).path == "/" + MANIFEST:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.manifest_bytes)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(self.manifest_bytes)
            return
        super().do_GET()

    def list_directory(self, path):  # no folder listings: the page links what it shows
        self.send_error(404, "not found")
        return None

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        log.info("%s %s", self.address_string(), format % args)


class ViewerServer:
    """An HTTP server for one folder on ``host:port`` (port 0 picks a free one); ``url`` is the page."""

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0):
        manifest = folder_manifest(folder)
        handler = partial(_Handler, directory=str(Path(folder).resolve()),
                          manifest_bytes=json.dumps(manifest).encode())
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise InvalidArgument(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); pick another "
                                  "port, or --port 0 for a free one", field="port") from None
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self.manifest = manifest
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> ViewerServer:
        """Serve in a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ldm3d-view", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


__all__ = ["MANIFEST", "STATIC", "ViewerServer", "folder_manifest", "write_viewer"]
