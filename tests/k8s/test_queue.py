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
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
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
    assert {o["kind"] for o in found} == {"ScaledJob", "ScaledObject", "TriggerAuthentication"}
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
    gateway = m.objects(OVERLAY, "Deployment")["ldm3d-gateway"]["spec"]["template"]["spec"]["containers"][0]
    url = urlparse(m.env_of(OVERLAY, gateway)["LDM3D_QUEUE"])
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
            assert t["authenticationRef"]["name"] in keda("TriggerAuthentication"), "KEDA needs Redis' password"
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


# -- the lock on Redis (docs/security.md): a password from a Secret, and a NetworkPolicy

SECRET, KEY = "ldm3d-redis", "password"


def _pods(target: str):
    """(labels, pod spec) of every pod template the target runs: Deployments, Jobs and KEDA ScaledJobs."""
    for o in m.render(target):
        spec = o.get("spec", {})
        tpl = spec.get("template") or spec.get("jobTargetRef", {}).get("template")
        if o["kind"] in ("Deployment", "StatefulSet", "Job", "ScaledJob") and tpl:
            yield o, tpl["metadata"].get("labels", {}), tpl["spec"]


def _selects(selector: dict, labels: dict) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In", e
        ok = ok and labels.get(e["key"]) in e["values"]
    return ok


def test_redis_requires_the_password_from_the_secret():
    (c,) = m.objects(OVERLAY, "Deployment")["ldm3d-redis"]["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert "--protected-mode" not in args, "protected mode stays on (an empty password then fails closed)"
    ref = re.fullmatch(r"\$\((\w+)\)", args[args.index("--requirepass") + 1])
    assert ref, "the password is never written into the manifest"
    env = m.env_of(OVERLAY, c)
    assert env[ref.group(1)] == m.secret_placeholder(SECRET, KEY)
    assert env["REDISCLI_AUTH"] == m.secret_placeholder(SECRET, KEY), "redis-cli probes must authenticate"
    assert all("redis-cli" in p["exec"]["command"] for p in (c["readinessProbe"], c["livenessProbe"]))
    assert not any(o["kind"] == "Secret" for o in m.render(OVERLAY)), "no secret value in git: create the Secret"


@pytest.mark.parametrize("target", m.TARGETS)
def test_every_queue_url_takes_the_password_from_the_secret(target):
    found = 0
    for cm in m.objects(target, "ConfigMap").values():
        assert not any(v.startswith(("redis://", "rediss://")) for v in cm.get("data", {}).values()), \
            f"ConfigMap {cm['metadata']['name']} holds a queue URL: it must be built from the Secret in env"
    for obj, _, pod in _pods(target):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            args = c.get("args", [])
            assert "--queue" not in args, f"{obj['metadata']['name']}: the queue URL goes in env (LDM3D_QUEUE)"
            env = m.env_of(target, c)
            if "LDM3D_QUEUE" not in env:
                continue
            found += 1
            url = env["LDM3D_QUEUE"]
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            assert "$(" not in url, f"{where}: {url} refers to a variable not defined before it"
            # what the process gets, parsed as it parses it (redis-py): the password is the Secret's
            parsed = redis.connection.parse_url(url)
            assert parsed.get("password") == m.secret_placeholder(SECRET, KEY), where
            if target == OVERLAY:
                assert parsed["host"] in m.objects(target, "Service"), where
            cfg = (worker_config(c).queue if args[:1] == ["worker"] else m.serve_config(target, c).queue)
            assert cfg == url, where
    if any(o["kind"] == "Deployment" and o["metadata"]["name"] == "ldm3d-redis" for o in m.render(target)):
        assert found >= 4, "the gateway, the renderer and both kinds of worker take the queue"


def test_only_the_fronts_the_workers_and_keda_reach_redis():
    policies = [p for p in m.objects(OVERLAY, "NetworkPolicy").values()
                if _selects(p["spec"]["podSelector"], {"app.kubernetes.io/name": "ldm3d",
                                                       "app.kubernetes.io/component": "redis"})]
    assert [p["metadata"]["name"] for p in policies] == ["ldm3d-redis"]
    (pol,) = policies
    redis_dep = m.objects(OVERLAY, "Deployment")["ldm3d-redis"]
    assert _selects(pol["spec"]["podSelector"], redis_dep["spec"]["template"]["metadata"]["labels"])
    assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"} and pol["spec"]["egress"] == [], \
        "Redis connects to nothing"
    (rule,) = pol["spec"]["ingress"]
    assert rule["ports"] == [{"port": "redis"}]
    port_names = [p["name"] for p in redis_dep["spec"]["template"]["spec"]["containers"][0]["ports"]]
    assert "redis" in port_names
    in_namespace = [peer["podSelector"] for peer in rule["from"] if "namespaceSelector" not in peer]
    allowed = {o["metadata"]["name"] for o, labels, _ in _pods(OVERLAY)
               if any(_selects(sel, labels) for sel in in_namespace)}
    takes_queue = {o["metadata"]["name"] for o, _, pod in _pods(OVERLAY)
                   if any("LDM3D_QUEUE" in m.env_of(OVERLAY, c) for c in pod["containers"])}
    assert allowed == takes_queue == {"ldm3d-gateway", "ldm3d-renderer", "ldm3d-generate-worker",
                                      "ldm3d-render-worker"}
    (other,) = [peer for peer in rule["from"] if "namespaceSelector" in peer]
    assert other == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
                     "podSelector": {"matchLabels": {"app": "keda-operator"}}}, "outside: only KEDA's operator"


def test_keda_authenticates_with_the_secret():
    (ta,) = keda("TriggerAuthentication").values()
    assert ta["spec"]["secretTargetRef"] == [{"parameter": "password", "name": SECRET, "key": KEY}]
