"""components/queue (durable jobs): Redis with a volume, generation workers as a Deployment + KEDA ScaledObject,
render workers as a KEDA ScaledJob, the fronts pointed at the queue. Rendered with kustomize like the other
overlays; KEDA's objects are validated against KEDA's own CRD schemas (tests/k8s/crds/keda.json, taken from
kedacore/keda, made strict here: unknown fields fail) since kubernetes-validate has no schema for custom resources,
and the ScaledJob's pod spec, a batch/v1 JobSpec, is validated by kubernetes-validate as a Job. Worker arguments go
through the real `ldm3d worker` parser and config. No cluster and no KEDA run here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import test_manifests as m

from ldm3d.cli import build_parser
from ldm3d.cli import worker as worker_cli
from ldm3d.jobs.broker import queue_key

pytestmark = m.pytestmark
OVERLAY = "production"
CRDS = json.loads((Path(__file__).parent / "crds" / "keda.json").read_text())


def keda(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in m.render(OVERLAY) if o["kind"] == kind}


def worker_config(container: dict):
    args = container["args"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`ldm3d {shlex.join(args)}` is refused by the ldm3d CLI: {err.getvalue().strip()}")
    assert ns.command == "worker", args
    return worker_cli.config(ns, env=m.env_of(OVERLAY, container))


def render_worker_pod() -> dict:
    return keda("ScaledJob")["ldm3d-render-worker"]["spec"]["jobTargetRef"]["template"]["spec"]


def generate_worker_pod() -> dict:
    return m.objects(OVERLAY, "Deployment")["ldm3d-generate-worker"]["spec"]["template"]["spec"]


def _strict(schema: dict) -> dict:
    """A CRD schema as the API server's strict field validation reads it: unknown fields are errors."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if isinstance(s, dict):
            if "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
                s.setdefault("additionalProperties", False)
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)

    walk(schema)
    return schema


def test_keda_objects_match_keda_crds():
    jsonschema = pytest.importorskip("jsonschema")
    found = [o for o in m.render(OVERLAY) if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in found} == {"ScaledJob", "ScaledObject"}
    for obj in found:
        crd = CRDS[obj["kind"]]
        assert obj["apiVersion"] == crd["apiVersion"]
        errors = sorted(jsonschema.Draft7Validator(_strict(crd["schema"])).iter_errors(obj), key=str)
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
            f"{e.message} at {'.'.join(map(str, e.path))}" for e in errors[:5])


@pytest.mark.parametrize("version", m.K8S_VERSIONS)
def test_scaled_job_runs_a_valid_job(version):
    kv = pytest.importorskip("kubernetes_validate")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ldm3d-render-worker"},
           "spec": keda("ScaledJob")["ldm3d-render-worker"]["spec"]["jobTargetRef"]}
    try:
        kv.validate(job, version, strict=True)
    except kv.ValidationError as err:
        pytest.fail(f"the ScaledJob's jobTargetRef is not a valid Kubernetes {version} JobSpec: {err.message} at "
                    f"{'.'.join(map(str, err.path))}")


def test_workers_take_their_kinds_and_share_the_fronts_folders():
    (rc,) = render_worker_pod()["containers"]
    render = worker_config(rc)
    assert render.kinds == ("render",) and render.concurrency == 1
    assert render.max_jobs == 1, "a ScaledJob's pod takes one render and ends"
    assert render.idle_exit_s > render.heartbeat_timeout_s * 4 / 3, "it must live long enough to requeue a dead " \
                                                                   "worker's render (Dramatiq's maintenance)"
    (gc,) = generate_worker_pod()["containers"]
    gen = worker_config(gc)
    assert gen.kinds == ("generate",) and gen.serve.repository == "/models"
    assert gen.serve.runtime == "triton" and gen.serve.triton_url == "ldm3d-triton:8001"  # components/triton
    deps = m.objects(OVERLAY, "Deployment")
    fronts = {n: m.serve_config(OVERLAY, deps[n]["spec"]["template"]["spec"]["containers"][0])
              for n in ("ldm3d-gateway", "ldm3d-renderer")}
    assert {f.queue for f in fronts.values()} == {render.queue} == {gen.queue}
    assert m.serve_config(OVERLAY, deps["ldm3d-sampler"]["spec"]["template"]["spec"]["containers"][0]).queue is None
    # files jobs: the renderer front makes the folder that a render worker on any node writes into
    front_pod = deps["ldm3d-renderer"]["spec"]["template"]["spec"]
    assert fronts["ldm3d-renderer"].render_output_dir == render.serve.render_output_dir

    def claim_at(pod, container, path):
        mount = next(x for x in container["volumeMounts"] if Path(path).is_relative_to(x["mountPath"]))
        vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        return vol["persistentVolumeClaim"]["claimName"], mount.get("readOnly", False)

    shared = claim_at(front_pod, front_pod["containers"][0], render.serve.render_output_dir)
    assert shared == claim_at(render_worker_pod(), rc, render.serve.render_output_dir) == ("ldm3d-renders", False)
    pvc = m.objects(OVERLAY, "PersistentVolumeClaim")["ldm3d-renders"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for pod, c in ((render_worker_pod(), rc), (generate_worker_pod(), gc)):
        assert c["livenessProbe"]["exec"]["command"][1] == worker_config(c).alive_file, "probe the file it touches"


def test_grace_covers_a_frame_and_deadlines_cover_the_time_limit():
    (rc,) = render_worker_pod()["containers"]
    assert render_worker_pod()["terminationGracePeriodSeconds"] >= 60, "a draining worker finishes its frame"
    job = keda("ScaledJob")["ldm3d-render-worker"]["spec"]["jobTargetRef"]
    assert job["activeDeadlineSeconds"] >= worker_config(rc).time_limit_s
    assert job["template"]["spec"]["restartPolicy"] == "Never" and job["backoffLimit"] >= 1
    assert generate_worker_pod()["terminationGracePeriodSeconds"] >= 120, "a draining worker finishes a generation"
    dep = m.objects(OVERLAY, "Deployment")["ldm3d-generate-worker"]
    assert "replicas" not in dep["spec"], "the ScaledObject owns replicas"


def test_keda_watches_the_dramatiq_queues_on_the_redis_service():
    queue_cm = next(c for n, c in m.objects(OVERLAY, "ConfigMap").items() if n.startswith("ldm3d-queue"))
    url = urlparse(queue_cm["data"]["LDM3D_QUEUE"])
    svc = m.objects(OVERLAY, "Service")[url.hostname]
    assert url.port in [p["port"] for p in svc["spec"]["ports"]]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "redis"
    targets = {("ScaledJob", "ldm3d-render-worker"): "render", ("ScaledObject", "ldm3d-generate-worker"): "generate"}
    for (kind, name), job_kind in targets.items():
        obj = keda(kind)[name]
        if kind == "ScaledObject":
            assert obj["spec"]["scaleTargetRef"]["name"] in m.objects(OVERLAY, "Deployment")
        lists = set()
        for t in obj["spec"]["triggers"]:
            assert t["type"] == "redis"
            assert t["metadata"]["address"] == f"{url.hostname}:{url.port}"
            assert t["metadata"]["databaseIndex"] == (url.path.lstrip("/") or "0")
            lists.add(t["metadata"]["listName"])
        # waiting jobs, and jobs handed back by a draining worker (Dramatiq's delay queue) that no worker moves on
        assert lists == {queue_key(job_kind), queue_key(job_kind) + ".DQ"}, name


def test_redis_keeps_its_data_on_a_volume():
    dep = m.objects(OVERLAY, "Deployment")["ldm3d-redis"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--dir") + 1] == "/data"
    mount = next(x for x in c["volumeMounts"] if x["mountPath"] == "/data")
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert vol["persistentVolumeClaim"]["claimName"] in m.objects(OVERLAY, "PersistentVolumeClaim")
