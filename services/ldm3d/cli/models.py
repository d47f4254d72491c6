"""``ldm3d export`` and ``ldm3d models``: write and manage a Triton model repository.

    ldm3d export --model demo/tiny --repository demo/repository [--version N] [--fp16] [--seamless]
    ldm3d models list    --repository demo/repository
    ldm3d models show    --repository demo/repository --model unet [--version N]
    ldm3d models verify  --repository demo/repository [--model unet] [--version N]
    ldm3d models promote --repository demo/repository --version N                # all traffic to release N
    ldm3d models promote --repository demo/repository --version N --canary 10    # 10 % of requests to release N
    ldm3d models promote --repository demo/repository --version N --canary 0     # end the canary
    ldm3d models promote --repository demo/repository --version N --require-eval # refuse a quality regression
    ldm3d models releases --repository demo/repository [--json]
    ldm3d models remove  --repository demo/repository --version N [--model unet]

``--version`` of ``promote`` is a release (``ldm3d.repository.releases``): one version of each model that serve
together. Serving processes pick a promote up within their ``--reload-interval`` without a restart.
"""

from __future__ import annotations

import argparse
import json
import re

from ..errors import FailedPrecondition, InvalidArgument, LDM3DError


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX into a Triton model repository")
    p.add_argument("--model", required=True, help="diffusers LDM3D checkpoint folder (or hub id)")
    p.add_argument("--repository", required=True, help="model repository folder (created if missing)")
    p.add_argument("--version", type=int, default=None, help="version number (default: one above the highest)")
    p.add_argument("--fp16", action="store_true", help="compute in float16 inside the graphs (GPU serving)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max relative error against torch (default 1e-3 fp32, 3e-2 fp16); above it nothing is published")
    p.add_argument("--fused-attention", action="store_true",
                   help="export U-Net attention as ONNX Runtime's MultiHeadAttention contrib op (onnxruntime "
                        "backends only; TensorRT's ONNX parser / trtexec cannot read it)")
    p.add_argument("--seamless", action="store_true",
                   help="bake seamless 360 padding into the U-Net and VAE (circular along x, zeros along y; "
                        "exported as Slice + Concat) so every panorama wraps; recorded in the manifests")
    p.add_argument("--models", default="text_encoder,unet,vae_decoder,vae_encoder",
                   help="comma-separated subset of text_encoder,unet,vae_decoder,vae_encoder")
    p.set_defaults(func=_export)

    m = sub.add_parser("models", help="list, show, verify, promote or remove model versions and releases")
    msub = m.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, helptext in (("list", "releases, models, versions, which is current"),
                             ("show", "one version's manifest"),
                             ("verify", "check every file against its manifest and config"),
                             ("remove", "delete a version folder")):
        a = msub.add_parser(action, help=helptext)
        a.add_argument("--repository", required=True, help="model repository folder")
        a.add_argument("--model", default=None, help="one model (default: every model)")
        a.add_argument("--version", type=int, default=None, required=action == "remove", help="version number")
        if action in ("list", "show", "verify"):
            a.add_argument("--json", action="store_true", help="machine-readable output")
        a.set_defaults(func=_models)
    r = msub.add_parser("releases", help="releases, their model versions, the current one and a running canary")
    r.add_argument("--repository", required=True, help="model repository folder")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=_releases)

    a = msub.add_parser(
        "promote", help="serve release N: to all traffic, to a canary share, or end a canary (rollback = promote "
                        "the old release)",
        description=_PROMOTE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--repository", required=True, help="model repository folder (the serving processes' volume)")
    a.add_argument("--version", type=int, required=True, metavar="N", help="the release (`ldm3d models releases`)")
    a.add_argument("--canary", default=None, metavar="P",
                   help="send P %% (1..100) of the requests that name no version to release N, the rest to the "
                        "current release; 0 ends a running canary (the current release stays)")
    a.add_argument("--require-eval", action="store_true",
                   help="refuse when release N's `ldm3d evaluate` report regresses CLIP or depth AbsRel against the "
                        "current release's (same captions and seeds)")
    a.add_argument("--eval-dir", default=None, metavar="DIR",
                   help="where the evaluation reports are (default: REPOSITORY/evaluations)")
    a.add_argument("--max-clip-drop", type=float, default=None, metavar="POINTS",
                   help="--require-eval: largest CLIP score drop allowed (default 0.5)")
    a.add_argument("--max-absrel-increase", type=float, default=None, metavar="FRACTION",
                   help="--require-eval: largest relative AbsRel increase allowed (default 0.1 = 10 %%)")
    a.add_argument("--force", action="store_true", help="promote although --require-eval found a regression")
    a.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of the release's files (the serving processes still check them)")
    a.add_argument("--lock-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for another promote or publish holding the repository's lock (default 10)")
    a.add_argument("--model", default=None, help=argparse.SUPPRESS)  # the per-model pin of old (version_policy)
    a.set_defaults(func=_promote_release)


_PROMOTE_DOC = """Serve a release: every serving process sharing the repository notices within its --reload-interval,
verifies and loads the release beside the one serving, switches, drains and unloads the old one. No restart, no
failed request. A rollback is a promote of the old release.

    ldm3d models promote --repository R --version N                 # all traffic to release N
    ldm3d models promote --repository R --version N --canary P       # P % of requests that name no version get N
    ldm3d models promote --repository R --version N --canary 0       # end a canary, keep the current release

The release's files are sha256-verified before anything changes; releases.json is replaced atomically, under a
lock. Bad input (no such release, a canary outside 0..100, a file failing verification, another promote racing
this one) exits 2 with one line naming the flag, and nothing is changed."""


def _percent(s: str | None) -> int | None:
    if s is None:
        return None
    try:
        return int(s)
    except ValueError:
        raise InvalidArgument(f"canary={s!r} is invalid: give a whole percentage from 0 to 100 (0 ends a running "
                              "canary)", field="canary") from None


def _export(args) -> int:
    from ..export import export_checkpoint

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    results = export_checkpoint(args.model, args.repository, version=args.version, models=models, fp16=args.fp16,
                                opset=args.opset, tolerance=args.tolerance,
                                fused_attention=args.fused_attention, seamless=args.seamless)
    for r in results:
        print(f"{r.model:<13} version {r.version}  error {r.max_error:.2e}  {r.seconds:5.1f} s  {r.path}")
    _record_release(args, results)
    return 0


def _record_release(args, results) -> None:
    """An export of release models becomes a release: the exported versions, the current release's for the rest."""
    from ..repository.releases import REQUIRED_MODELS, ensure_release, read_releases, release_models

    names = release_models(args.repository)
    exported = {r.model: r.version for r in results if r.model in names}
    if not exported or not all(m in names for m in REQUIRED_MODELS):
        return
    state = read_releases(args.repository)
    base = state.current_release().models if (state.current is not None or state.fallback) else {}
    models = {m: exported.get(m, base.get(m)) for m in names}
    if None in models.values():
        print(f"no release recorded: no version of {[m for m, v in models.items() if v is None]} to pair with")
        return
    release, new = ensure_release(args.repository, models, {"kind": "export", "checkpoint": str(args.model),
                                                            "models": sorted(exported)})
    current = read_releases(args.repository).current
    if release.number == current:
        print(f"release {release.number}: {models} (current)")
    else:
        print(f"release {release.number}{' recorded' if new else ''}: {models}; serve it with `ldm3d models promote "
              f"--repository {args.repository} --version {release.number} [--canary P]`")


def _models(args) -> int:
    from ..repository import ModelRepository

    repo = ModelRepository(args.repository)
    models = [args.model] if args.model else repo.models()
    for m in models:
        repo.model_dir(m)  # NotFound naming the model
    return {"list": _list, "show": _show, "verify": _verify, "remove": _remove}[args.action](repo, models, args)


def _list(repo, models, args) -> int:
    from ..repository.releases import read_releases

    rel = read_releases(repo)
    rows = []
    for m in models:
        cfg = repo.config(m)
        for info in repo.info(m):
            manifest = {}
            try:
                manifest = repo.manifest(m, info.version)
            except FailedPrecondition:
                pass
            rows.append({"model": m, "version": info.version, "current": info.current, "served": info.served,
                         "precision": manifest.get("export", {}).get("precision", "?"),
                         "created": manifest.get("created", "?"), "policy": cfg.version_policy,
                         "releases": [r.number for r in rel.releases.values() if r.models.get(m) == info.version]})
        if not repo.versions(m):
            rows.append({"model": m, "version": None, "current": False, "served": False, "precision": "",
                         "created": "", "policy": cfg.version_policy})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if rel.releases or rel.fallback:
        _print_releases(rel)
        print()
    w = max([13, *(len(r["model"]) for r in rows)])  # depth_estimator / depth_reference are 15 wide
    print(f"{'MODEL':<{w}} {'VERSION':>7}  {'STATE':<8} {'PRECISION':<9} CREATED")
    for r in rows:
        state = "current" if r["current"] else "served" if r["served"] else "-" if r["version"] else "(none)"
        print(f"{r['model']:<{w}} {r['version'] or '':>7}  {state:<8} {r['precision']:<9} {r['created']}")
    return 0


def _show(repo, models, args) -> int:
    out = {}
    for m in models:
        v = args.version if args.version is not None else repo.current_version(m)
        manifest = repo.manifest(m, v)
        out[m] = {"version": v, "current": v == repo.current_version(m) if repo.served_versions(m) else False,
                  "config": str(repo.model_dir(m) / "config.pbtxt"),
                  # the flag `ldm3d export --seamless` baked in (U-Net and VAE; not applicable to the others)
                  "seamless": manifest.get("export", {}).get("seamless"), "manifest": manifest}
    print(json.dumps(out, indent=2))  # a manifest is JSON: shown as such, --json or not
    return 0


def _verify(repo, models, args) -> int:
    report, bad = [], 0
    for m in models:
        versions = [args.version] if args.version is not None else repo.versions(m)
        for v in versions:
            problems = repo.verify(m, v)
            errors = [p for p in problems if p.problem != "unlisted"]
            bad += bool(errors)
            report.append({"model": m, "version": v, "ok": not errors,
                           "problems": [{"file": p.path, "problem": p.problem, "detail": p.detail} for p in problems]})
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        w = max([13, *(len(r["model"]) for r in report)])
        for r in report:
            print(f"{r['model']:<{w}} version {r['version']}: {'ok' if r['ok'] else 'FAILED'}")
            for p in r["problems"]:
                print(f"    {repo.version_dir(r['model'], r['version']) / p['file']}: {p['detail']}")
    return 1 if bad else 0


def _flagged(err: LDM3DError, args) -> LDM3DError:
    """The library names fields (``version=7: …``); on the command line they are flags (``--version 7: …``)."""
    if not err.field:
        return err
    flag, msg = "--" + err.field.replace("_", "-"), err.message
    m = re.match(rf"{re.escape(err.field)}=(\S+?)(:| |$)", msg)
    if m:
        msg = f"{flag} {m.group(1)}{msg[m.end(1):]}"
    elif msg.startswith(err.field + ":"):
        msg = flag + msg[len(err.field):]
    elif not msg.startswith("--"):
        msg = f"{flag} {getattr(args, err.field, '')}: {msg}"
    return type(err)(msg, field=err.field)


def _promote_release(args) -> int:
    from ..repository import ModelRepository
    from ..repository.releases import promote, read_releases

    try:
        if args.model:  # the per-model pin of old: Triton's version_policy, for models no release names
            repo = ModelRepository(args.repository)
            repo.model_dir(args.model)
            if args.canary is not None:
                raise InvalidArgument("--canary is for releases: drop --model", field="canary")
            repo.promote(args.model, args.version)
            print(f"{args.model}: version {args.version} is now current (version_policy specific)")
            return 0
        args.canary = _percent(args.canary)
        before = read_releases(args.repository)
        release = before.get(args.version)
        if args.require_eval and args.canary != 0:
            _eval_gate(args, before, release)
        after = promote(args.repository, args.version, args.canary, verify=not args.no_verify,
                        expect_generation=before.generation if before.explicit else None,
                        lock_timeout_s=args.lock_timeout, by="ldm3d models promote")
    except LDM3DError as err:
        raise _flagged(err, args) from None
    models = ", ".join(f"{m} {v}" for m, v in release.models.items())
    if args.canary is None:
        was = "" if before.current in (None, after.current) else f" (was release {before.current})"
        print(f"release {args.version} is now current{was}: {models}")
    elif args.canary == 0:
        print(f"canary ended; release {after.current} serves all traffic" if before.canary else
              f"no canary was running; release {after.current} serves all traffic")
    else:
        print(f"canary: {args.canary} % of requests that name no version go to release {args.version} ({models}); "
              f"the rest to release {after.current}")
    print(f"serving processes switch within their --reload-interval (releases.json generation {after.generation})")
    return 0


def _eval_gate(args, state, release) -> None:
    from pathlib import Path

    from ..repository import eval_gate

    current = state.current_release()
    if current.number == release.number:
        return
    folder = Path(args.eval_dir) if args.eval_dir else Path(args.repository) / eval_gate.EVALUATIONS
    cmp = eval_gate.compare(folder, release, current,
                            eval_gate.MAX_CLIP_DROP if args.max_clip_drop is None else args.max_clip_drop,
                            eval_gate.MAX_ABSREL_INCREASE if args.max_absrel_increase is None
                            else args.max_absrel_increase)
    if cmp.regressions and not args.force:
        raise FailedPrecondition(f"require_eval: release {release.number} regresses against release {current.number}: "
                                 + "; ".join(cmp.regressions) + " — nothing was changed (--force promotes anyway)",
                                 field="require_eval")
    print(f"evaluation: {cmp.summary()}" + (" — regressions overridden by --force" if cmp.regressions else ""))


def _releases(args) -> int:
    from ..repository.releases import read_releases

    rel = read_releases(args.repository)
    if args.json:
        print(json.dumps(rel.to_json(), indent=2))
        return 0
    _print_releases(rel)
    return 0


def _print_releases(rel) -> None:
    kind = "releases.json" if rel.explicit else "implicit: release N = version N of every model"
    print(f"RELEASE  STATE          MODEL VERSIONS{' ' * 40}CREATED   ({kind})")
    for r in rel.releases.values():
        state = ("current" if r.number == rel.current else
                 f"canary {rel.canary.percent}%" if rel.canary and r.number == rel.canary.release else "-")
        models = " ".join(f"{m}={v}" for m, v in r.models.items())
        print(f"{r.number:>7}  {state:<13}  {models:<54}{r.created}")
    if rel.current is None and rel.fallback:
        models = " ".join(f"{m}={v}" for m, v in rel.fallback.items())
        print(f"{'-':>7}  {'current':<13}  {models:<54}(no release: each model's own current version)")


def _remove(repo, models, args) -> int:
    models = [m for m in models if args.version in repo.versions(m)] if not args.model else models
    if not models:
        raise FailedPrecondition(f"version={args.version}: no model in {repo.root} has that version")
    for m in models:
        repo.remove(m, args.version)
        print(f"{m}: version {args.version} removed")
    return 0
