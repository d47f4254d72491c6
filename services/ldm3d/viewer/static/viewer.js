// LDM3D 360 viewer: the DepthFusion sphere (mesh.glb: the panorama on a sphere whose vertices move with depth)
// seen from inside. Drag (mouse or touch) to look around, keys to move the head inside a small box (parallax),
// wheel to zoom, "Enter VR" for stereo on a headset (WebXR). Without WebGL the ODS still is shown instead.
// Reads pano.json beside the page: {prompt, files: {mesh, ods, ...}, render: {radius, ...}, generation: {...}}.
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { VRButton } from 'three/addons/webxr/VRButton.js';

const $ = (id) => document.getElementById(id);
const DEG = Math.PI / 180;

function setStatus(text) {
  $('status').textContent = text;
}

function webglAvailable() {
  try {
    const c = document.createElement('canvas');
    return !!(window.WebGLRenderingContext && (c.getContext('webgl2') || c.getContext('webgl')));
  } catch (e) {
    return false;
  }
}

function showInfo(m) {
  $('prompt').textContent = m.prompt || m.title || 'LDM3D 360';
  document.title = `${m.prompt || 'LDM3D'} — 360 viewer`;
  const params = { ...(m.generation || {}), render: m.render || {} };
  $('params').textContent = JSON.stringify(params, null, 2);
  const links = $('links');
  for (const [label, key] of [['ODS still', 'ods'], ['360 video', 'video360'], ['camera move', 'video'],
                              ['mesh', 'mesh'], ['RGB', 'rgb'], ['depth', 'depth_preview']]) {
    const href = (m.files || {})[key];
    if (!href) continue;
    const a = document.createElement('a');
    a.href = href;
    a.textContent = label;
    links.appendChild(a);
  }
}

function showFallback(m, reason) {
  $('stage').hidden = true;
  const ods = (m.files || {}).ods;
  if (ods) {
    $('fallback-img').src = ods;
    $('fallback').hidden = false;
  }
  document.body.dataset.state = 'fallback';
  setStatus(reason + (ods ? '; showing the ODS still' : ''));
}

// Look direction (yaw: + turns right, towards growing longitude; pitch: + looks up) and head offset in metres.
class View {
  constructor(radius) {
    this.yaw = 0;
    this.pitch = 0;
    this.fov = 75;
    this.head = new THREE.Vector3();
    this.box = 0.15 * radius; // half-size of the head box: the orbit path's reach (docs/render.md)
  }
  reset() {
    this.yaw = 0;
    this.pitch = 0;
    this.fov = 75;
    this.head.set(0, 0, 0);
  }
  move(forward, right, up) {
    // in the horizontal frame of the current look direction; three looks along -Z, x right, y up
    const s = Math.sin(this.yaw), c = Math.cos(this.yaw);
    this.head.x += right * c + forward * s;
    this.head.z += right * s - forward * c;
    this.head.y += up;
    const b = this.box;
    this.head.clamp(new THREE.Vector3(-b, -b, -b), new THREE.Vector3(b, b, b));
  }
}

async function main() {
  const response = await fetch('pano.json', { cache: 'no-store' });
  if (!response.ok) throw new Error(`pano.json: HTTP ${response.status}`);
  const m = await response.json();
  showInfo(m);
  if (!webglAvailable()) {
    showFallback(m, 'WebGL is not available');
    return;
  }
  const radius = (m.render && m.render.radius) || 2.0;
  const view = new View(radius);

  const renderer = new THREE.WebGLRenderer({ antialias: true });
  renderer.setPixelRatio(window.devicePixelRatio);
  renderer.setSize(window.innerWidth, window.innerHeight);
  renderer.outputColorSpace = THREE.SRGBColorSpace;
  renderer.xr.enabled = true;
  const stage = $('stage');
  stage.appendChild(renderer.domElement);

  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x000000);
  const rig = new THREE.Group(); // the head box: in VR the headset pose is relative to it
  const camera = new THREE.PerspectiveCamera(view.fov, window.innerWidth / window.innerHeight, 0.01, 50 * radius);
  camera.rotation.order = 'YXZ';
  rig.add(camera);
  scene.add(rig);

  setStatus('loading the mesh…');
  const gltf = await new GLTFLoader().loadAsync(m.files.mesh);
  let triangles = 0;
  gltf.scene.traverse((o) => {
    if (o.isMesh) {
      o.material.side = THREE.DoubleSide; // we stand inside the sphere
      o.frustumCulled = false;
      triangles += (o.geometry.index ? o.geometry.index.count : o.geometry.attributes.position.count) / 3;
    }
  });
  scene.add(gltf.scene);
  // Behind the mesh, the panorama on a plain sphere: the mesh leaves gaps at depth edges (no rubber sheet), and
  // through them one sees the panorama's colour in that direction rather than black.
  if (m.files.rgb) {
    const texture = await new THREE.TextureLoader().loadAsync(m.files.rgb);
    texture.colorSpace = THREE.SRGBColorSpace;
    const far = 1.5 * radius * (1 + ((m.render && m.render.depth_strength) || 1));
    const sphere = new THREE.SphereGeometry(far, 128, 64);
    // SphereGeometry puts u at (-cos u, sin u) in (x, z); the panorama's longitude is atan2(x, -z) = 2 pi u - pi
    // (centre ahead along -Z, x to the right), which is the map (x, z) -> (-z, -x)
    sphere.applyMatrix4(new THREE.Matrix4().set(0, 0, -1, 0, 0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 0, 1));
    scene.add(new THREE.Mesh(sphere, new THREE.MeshBasicMaterial({ map: texture, side: THREE.DoubleSide })));
  }

  // look around: pointer events cover mouse, pen and touch
  let drag = null;
  stage.addEventListener('pointerdown', (e) => {
    drag = { x: e.clientX, y: e.clientY };
    stage.setPointerCapture(e.pointerId);
    stage.classList.add('dragging');
  });
  stage.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const perPixel = (view.fov * DEG) / window.innerHeight; // the scene follows the pointer
    view.yaw -= (e.clientX - drag.x) * perPixel;
    view.pitch = Math.max(-89 * DEG, Math.min(89 * DEG, view.pitch + (e.clientY - drag.y) * perPixel));
    drag = { x: e.clientX, y: e.clientY };
  });
  const endDrag = (e) => {
    drag = null;
    stage.classList.remove('dragging');
    if (stage.hasPointerCapture(e.pointerId)) stage.releasePointerCapture(e.pointerId);
  };
  stage.addEventListener('pointerup', endDrag);
  stage.addEventListener('pointercancel', endDrag);
  stage.addEventListener('wheel', (e) => {
    e.preventDefault();
    view.fov = Math.max(30, Math.min(110, view.fov + e.deltaY * 0.05));
  }, { passive: false });

  const held = new Set();
  window.addEventListener('keydown', (e) => {
    if (e.key === 'r' || e.key === 'R') view.reset();
    held.add(e.code);
  });
  window.addEventListener('keyup', (e) => held.delete(e.code));
  window.addEventListener('blur', () => held.clear());
  window.addEventListener('resize', () => {
    camera.aspect = window.innerWidth / window.innerHeight;
    camera.updateProjectionMatrix();
    renderer.setSize(window.innerWidth, window.innerHeight);
  });

  let last = performance.now();
  const speed = 0.25 * radius; // metres per second
  renderer.setAnimationLoop(() => {
    const now = performance.now();
    const step = speed * Math.min((now - last) / 1000, 0.1);
    last = now;
    const axis = (pos, neg) => (held.has(pos) ? 1 : 0) - (held.has(neg) ? 1 : 0);
    const f = axis('KeyW', 'KeyS') + axis('ArrowUp', 'ArrowDown');
    const r = axis('KeyD', 'KeyA') + axis('ArrowRight', 'ArrowLeft');
    const u = axis('KeyE', 'KeyQ');
    if (f || r || u) view.move(f * step, r * step, u * step);
    rig.position.copy(view.head);
    if (!renderer.xr.isPresenting) {
      camera.rotation.set(view.pitch, -view.yaw, 0);
      if (camera.fov !== view.fov) {
        camera.fov = view.fov;
        camera.updateProjectionMatrix();
      }
    }
    renderer.render(scene, camera);
  });

  document.body.appendChild(VRButton.createButton(renderer));
  window.ldm3dViewer = { view, renderer, camera, triangles };
  document.body.dataset.state = 'ready';
  setStatus(`${Math.round(triangles).toLocaleString()} triangles · radius ${radius} m · head box ±${view.box.toFixed(2)} m`);
}

main().catch((err) => {
  setStatus(`could not show the 3D view: ${err.message}`);
  document.body.dataset.state = 'error';
  console.error(err);
  fetch('pano.json').then((r) => r.json()).then((m) => showFallback(m, `3D view failed (${err.message})`))
    .catch(() => {});
});
