"""The roll-out Job (k8s/components/rollout): renders with kustomize next to the base, validates strictly, runs the
real `ldm3d models promote` parser on its command for canary / full / rollback settings, and writes to the same
repository PVC that the serving pods mount read-only.

Offline: nothing here talks to an API server."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_manifests import K8S, K8S_VERSIONS, KUBECTL

from ldm3d.cli import build_parser

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) is not installed here")


def render(literals: list[str]) -> list[dict]:
    """What an operator renders: the base plus the component, with the ConfigMap they generate."""
    folder = Path(tempfile.mkdtemp(prefix="ldm3d-rollout-"))
    try:
        rel = os.path.relpath(K8S, folder)
        (folder / "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [f"{rel}/base"], "components": [f"{rel}/components/rollout"],
            "configMapGenerator": [{"name": "ldm3d-promote", "literals": literals}]}))
        out = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(folder)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def promote_args(docs: list[dict]) -> list[str]:
    """The Job's shell command expanded with its ConfigMap, as /bin/sh would, minus the leading `exec ldm3d`."""
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env = {}
    for e in c["env"]:
        ref = e["valueFrom"]["configMapKeyRef"]
        assert ref["name"] in cms, f"the Job names ConfigMap {ref['name']!r}, which is not rendered"
        if ref["key"] in cms[ref["name"]]:
            env[e["name"]] = cms[ref["name"]][ref["key"]]
    assert c["command"] == ["/bin/sh", "-c"]
    script = c["args"][0]
    out = subprocess.run(["/bin/sh", "-c", script.replace("exec ldm3d", "printf '%s\\n'", 1)],
                         capture_output=True, text=True, env=env, check=True)
    return out.stdout.splitlines()


def test_canary_full_and_rollback_jobs_parse_with_the_real_cli():
    for literals, canary in ((["RELEASE=3", "CANARY=10"], "10"), (["RELEASE=3"], None),
                             (["RELEASE=2", "CANARY="], None),
                             (["RELEASE=3", "CANARY=0"], "0"),
                             (["RELEASE=3", "PROMOTE_FLAGS=--require-eval"], None)):
        args = promote_args(render(literals))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            ns = build_parser().parse_args(args)
        assert (ns.command, ns.action, ns.repository) == ("models", "promote", "/models"), shlex.join(args)
        assert str(ns.version) == literals[0].split("=")[1] and ns.canary == canary
        assert ns.require_eval == ("PROMOTE_FLAGS=--require-eval" in literals)


def test_the_job_writes_the_volume_the_serving_pods_read():
    docs = render(["RELEASE=3"])
    (job,) = [d for d in docs if d["kind"] == "Job"]
    spec = job["spec"]
    assert spec["backoffLimit"] == 0, "a refused promote changes nothing: retrying it blindly helps nobody"
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    vols = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/models")
    assert not mount.get("readOnly") and vols[mount["name"]]["persistentVolumeClaim"]["claimName"] == \
        "ldm3d-model-repository"
    served = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name, dep in served.items():  # the serving pods mount that same claim, read-only
        for v in dep["spec"]["template"]["spec"].get("volumes", []):
            if v.get("persistentVolumeClaim", {}).get("claimName") == "ldm3d-model-repository":
                break
        else:
            continue
        assert pod["securityContext"]["fsGroup"] == dep["spec"]["template"]["spec"]["securityContext"]["fsGroup"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_schema_strict(version):
    kv = pytest.importorskip("kubernetes_validate")
    for obj in render(["RELEASE=3", "CANARY=50"]):
        kv.validate(obj, version, strict=True)
