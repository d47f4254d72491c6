"""The ``ldm3d`` command. Each subcommand lives in its own module with a ``register(subparsers)`` function.

    ldm3d --help
    ldm3d make-tiny-model demo/tiny
    ldm3d generate --model demo/tiny --prompt "a cabin in the woods" --out demo/out
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import LDM3DError

# module name → registered subcommands; a module that fails to import (a missing optional extra) is reported
# when its command is used, not when any other command runs.
_MODULES = ("generate", "tiny", "models", "serve", "worker", "render", "depth", "evaluate", "pano", "view")

log = logging.getLogger("ldm3d")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldm3d",
        description="LDM3D: text → RGB + depth, RGBD panoramas → 360° stereo stills, videos and meshes.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("ldm3d.cli."):
                continue  # that command is not built yet
            _register_missing(sub, name, exc)
            continue
        module.register(sub)
    return parser


def _register_missing(sub, name: str, exc: ModuleNotFoundError) -> None:
    p = sub.add_parser(name.replace("_", "-"), help=f"(unavailable: {exc.name} is not installed)")

    def fail(_args):
        raise LDM3DError(f"`ldm3d {name}` needs the Python package {exc.name!r}: pip install -e '.[all]'")

    p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2), format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command("ldm3d", args)


def run_command(prog: str, args: argparse.Namespace, interrupted: str = "interrupted") -> int:
    """Run the parsed subcommand: an error a user can fix (:class:`LDM3DError`) prints one line and exits 2, Ctrl-C
    prints ``interrupted`` and exits 130. Shared by ``ldm3d`` and ``ldm3d-train``."""
    try:
        return int(args.func(args) or 0)
    except LDM3DError as err:
        print(f"{prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: {interrupted}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
