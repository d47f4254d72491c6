"""``ldm3d export`` and ``ldm3d models``: write and manage a Triton model repository.

    ldm3d export --model demo/tiny --repository demo/repository [--version N] [--fp16]
    ldm3d models list    --repository demo/repository
    ldm3d models show    --repository demo/repository --model unet [--version N]
    ldm3d models verify  --repository demo/repository [--model unet] [--version N]
    ldm3d models promote --repository demo/repository --version N [--model unet]
    ldm3d models remove  --repository demo/repository --version N [--model unet]
"""

from __future__ import annotations

import json

from ..errors import FailedPrecondition


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
    p.add_argument("--models", default="text_encoder,unet,vae_decoder,vae_encoder",
                   help="comma-separated subset of text_encoder,unet,vae_decoder,vae_encoder")
    p.set_defaults(func=_export)

    m = sub.add_parser("models", help="list, show, verify, promote or remove model versions in a repository")
    msub = m.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, helptext in (("list", "models, versions, which is current"), ("show", "one version's manifest"),
                             ("verify", "check every file against its manifest and config"),
                             ("promote", "serve exactly this version (version_policy specific)"),
                             ("remove", "delete a version folder")):
        a = msub.add_parser(action, help=helptext)
        a.add_argument("--repository", required=True, help="model repository folder")
        a.add_argument("--model", default=None, help="one model (default: every model)")
        a.add_argument("--version", type=int, default=None, required=action in ("promote", "remove"),
                       help="version number")
        if action in ("list", "show", "verify"):
            a.add_argument("--json", action="store_true", help="machine-readable output")
        a.set_defaults(func=_models)


def _export(args) -> int:
    from ..export import export_checkpoint

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    results = export_checkpoint(args.model, args.repository, version=args.version, models=models, fp16=args.fp16,
                                opset=args.opset, tolerance=args.tolerance,
                                fused_attention=args.fused_attention)
    for r in results:
        print(f"{r.model:<13} version {r.version}  error {r.max_error:.2e}  {r.seconds:5.1f} s  {r.path}")
    return 0


def _models(args) -> int:
    from ..repository import ModelRepository

    repo = ModelRepository(args.repository)
    models = [args.model] if args.model else repo.models()
    for m in models:
        repo.model_dir(m)  # NotFound naming the model
    return {"list": _list, "show": _show, "verify": _verify, "promote": _promote, "remove": _remove}[args.action](
        repo, models, args)


def _list(repo, models, args) -> int:
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
                         "created": manifest.get("created", "?"), "policy": cfg.version_policy})
        if not repo.versions(m):
            rows.append({"model": m, "version": None, "current": False, "served": False, "precision": "",
                         "created": "", "policy": cfg.version_policy})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
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
        out[m] = {"version": v, "current": v == repo.current_version(m) if repo.served_versions(m) else False,
                  "config": str(repo.model_dir(m) / "config.pbtxt"), "manifest": repo.manifest(m, v)}
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


def _promote(repo, models, args) -> int:
    models = [m for m in models if args.version in repo.versions(m)] if not args.model else models
    if not models:
        raise FailedPrecondition(f"version={args.version}: no model in {repo.root} has that version")
    for m in models:
        repo.promote(m, args.version)
        print(f"{m}: version {args.version} is now current (version_policy specific)")
    return 0


def _remove(repo, models, args) -> int:
    models = [m for m in models if args.version in repo.versions(m)] if not args.model else models
    if not models:
        raise FailedPrecondition(f"version={args.version}: no model in {repo.root} has that version")
    for m in models:
        repo.remove(m, args.version)
        print(f"{m}: version {args.version} removed")
    return 0
