"""The viewer page in a real browser: Debian's headless Chromium with software WebGL (SwiftShader through ANGLE),
driven by Playwright (``executable_path=/usr/bin/chromium``; Playwright's own browser download is never used).

The page must load, draw a non-blank view, turn when dragged, honour the 360 conventions (centre ahead, x to the
right), keep the head inside its box, fall back to the ODS still without WebGL, and log no console errors.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError("the browser tests need Debian's chromium (`make system-deps` installs it)")
    pytest.skip("needs Debian's chromium (apt-get install chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (the dev extra)")

# the network is closed here and a test browser must not phone home or keep state between runs
FLAGS = ["--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-default-apps", "--disable-extensions", "--mute-audio"]
SOFTWARE_WEBGL = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-gpu"]
NO_WEBGL = ["--disable-webgl", "--disable-3d-apis", "--disable-gpu"]
VIEWPORT = {"width": 640, "height": 400}


class Browser:
    """A fresh headless Chromium profile; pages record console errors and uncaught exceptions."""

    def __init__(self, pw, extra_flags):
        self.profile = tempfile.mkdtemp(prefix="ldm3d-chromium-")
        self.ctx = pw.chromium.launch_persistent_context(
            self.profile, executable_path=CHROMIUM, headless=True, args=FLAGS + extra_flags, viewport=VIEWPORT)
        self.errors: list[str] = []

    def open(self, url: str, state: str = "ready"):
        page = self.ctx.new_page()
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.goto(url)
        page.wait_for_selector("body[data-state]", timeout=60_000)
        got = page.evaluate("document.body.dataset.state")
        assert got == state, f"page state {got!r}: {page.text_content('#status')}; errors {self.errors}"
        return page

    def close(self):
        self.ctx.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def pw():
    with playwright.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(pw):
    b = Browser(pw, SOFTWARE_WEBGL)
    yield b
    b.close()


def screenshot(page) -> np.ndarray:
    from PIL import Image

    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # a fresh frame
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(np.int16)


def canvas_pixel(page, x: int, y: int) -> np.ndarray:
    return screenshot(page)[y, x]


def test_the_panorama_loads_draws_and_turns_when_dragged(browser, pano_dir):
    from ldm3d.viewer import ViewerServer

    with ViewerServer(pano_dir) as server:
        page = browser.open(server.url)
        before = screenshot(page)
        # not blank: nearly every pixel is lit and the view holds the panorama's many colours
        lit = float((before.sum(-1) > 30).mean())
        colours = len(np.unique(before.reshape(-1, 3), axis=0))
        page.mouse.move(320, 200)
        page.mouse.down()
        page.mouse.move(470, 230, steps=8)
        page.mouse.up()
        after = screenshot(page)
        changed = float((np.abs(after - before).sum(-1) > 30).mean())
        print(f"\nscreenshot {before.shape[1]}x{before.shape[0]}: lit {lit:.3f}, {colours} colours; "
              f"pixels changed by the drag {changed:.3f}")
        assert lit > 0.9 and colours > 1000
        assert changed > 0.3
        assert page.text_content("#prompt") == "a cozy cabin"
        params = json.loads(page.text_content("#params"))
        assert params["seed"] == 7 and params["seamless"] is True and params["render"]["radius"] == 2.0
        vr = page.text_content("#VRButton") or ""
        assert "VR" in vr  # "ENTER VR" on a headset; headless Chromium has no XR device: "VR NOT SUPPORTED"
        page.close()
    assert browser.errors == []


def _marker_folder(tmp_path):
    """A panorama whose quarters have known colours: ahead (longitude 0) red, right (+90°) green, behind blue,
    left (−90°) yellow; flat depth, so the sphere is round."""
    from ldm3d import codec
    from ldm3d.render import RenderSpec, render_job
    from ldm3d.render.geometry import pixel_lon
    from ldm3d.viewer import write_viewer

    w, h = 256, 128
    lon = np.degrees(pixel_lon(w))
    colours = np.array([[220, 30, 30], [30, 200, 30], [30, 30, 220], [230, 220, 30]], np.uint8)
    quarter = np.select([np.abs(lon) <= 45, (lon > 45) & (lon <= 135), np.abs(lon) > 135], [0, 1, 2], 3)
    rgb = np.broadcast_to(colours[quarter][None], (h, w, 3)).copy()
    depth = np.full((h, w), 32768, np.uint16)
    render_job(RenderSpec(rgb=rgb, depth=depth, ods=True, meshes=("glb",)), out_dir=tmp_path)
    codec.write_png(tmp_path / "rgb.png", rgb)
    (tmp_path / "pano.json").write_text(json.dumps({
        "prompt": "markers", "files": {"mesh": "mesh.glb", "ods": "ods.png", "rgb": "rgb.png"},
        "render": {"radius": 2.0, "depth_strength": 1.0}, "generation": {}}))
    write_viewer(tmp_path)
    return colours


def test_conventions_head_box_and_keys(browser, tmp_path):
    from ldm3d.viewer import ViewerServer

    colours = _marker_folder(tmp_path)
    with ViewerServer(tmp_path) as server:
        page = browser.open(server.url)
        cx, cy = VIEWPORT["width"] // 2, VIEWPORT["height"] - 60  # below the info box
        near = lambda px, c: np.abs(px - c.astype(np.int16)).max() < 40  # noqa: E731
        assert near(canvas_pixel(page, cx, cy), colours[0]), "the panorama's centre must be straight ahead"
        page.evaluate("ldm3dViewer.view.yaw = Math.PI / 2")  # turn right
        assert near(canvas_pixel(page, cx, cy), colours[1]), "x grows to the right: turning right shows +90°"
        page.evaluate("ldm3dViewer.view.yaw = -Math.PI / 2")
        assert near(canvas_pixel(page, cx, cy), colours[3])
        # dragging to the left turns the view right (the scene follows the pointer)
        page.evaluate("ldm3dViewer.view.reset()")
        page.mouse.move(400, cy)
        page.mouse.down()
        page.mouse.move(200, cy, steps=5)
        page.mouse.up()
        assert page.evaluate("ldm3dViewer.view.yaw") > 0.3
        # W walks forward (-Z) and stops at the head box's wall (0.15 x radius = 0.3 m)
        page.evaluate("ldm3dViewer.view.reset()")
        page.keyboard.down("KeyW")
        page.wait_for_timeout(2500)
        page.keyboard.up("KeyW")
        head = page.evaluate("ldm3dViewer.view.head.toArray()")
        assert head[2] == pytest.approx(-0.3, abs=1e-6) and abs(head[0]) < 1e-6, head
        assert page.evaluate("ldm3dViewer.renderer.xr.enabled") is True
        page.close()
    assert browser.errors == []


def test_without_webgl_the_ods_still_is_shown(pw, pano_dir):
    from ldm3d.viewer import ViewerServer

    b = Browser(pw, NO_WEBGL)
    try:
        with ViewerServer(pano_dir) as server:
            page = b.open(server.url, state="fallback")
            page.wait_for_function("document.getElementById('fallback-img').naturalWidth > 0", timeout=10_000)
            assert page.evaluate("document.getElementById('fallback-img').naturalWidth") == 128
            assert page.is_visible("#fallback-img") and "WebGL" in page.text_content("#status")
            page.close()
        assert b.errors == []
    finally:
        b.close()


def test_drag_speed_follows_the_field_of_view(browser, tmp_path):
    """One screen height of drag turns the view by one vertical field of view (75°): the scene stays under the
    pointer."""
    from ldm3d.viewer import ViewerServer

    _marker_folder(tmp_path)
    with ViewerServer(tmp_path) as server:
        page = browser.open(server.url)
        page.mouse.move(600, 300)
        page.mouse.down()
        page.mouse.move(600 - VIEWPORT["height"], 300, steps=4)
        page.mouse.up()
        assert page.evaluate("ldm3dViewer.view.yaw") == pytest.approx(math.radians(75), rel=1e-3)
        page.close()
    assert browser.errors == []
