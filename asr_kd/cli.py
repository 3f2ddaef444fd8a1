"""The ``asr-kd`` command line.

Each subcommand lives in a module with a ``register(subparsers)`` function that
adds its parser and sets ``func`` (called with the parsed args, returns an exit
code). Add a module to :data:`COMMAND_MODULES` to add a subcommand.

Example
-------
    asr-kd --help
    asr-kd demo
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from . import __version__, logs
from .errors import UserError, describe_os_error

__all__ = ["UserError", "build_parser", "main"]

#: Modules that each register one or more subcommands, in --help order.
COMMAND_MODULES: list[str] = [
    "asr_kd.commands.demo",
    "asr_kd.commands.run",
    "asr_kd.commands.infer",
    "asr_kd.commands.export",
    "asr_kd.commands.data",
    "asr_kd.commands.cache_info",
    "asr_kd.commands.mnist",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-kd",
        description="Knowledge distillation for speech recognition (Hinton, Vinyals & Dean 2015).",
    )
    parser.add_argument("--version", action="version", version=f"asr-kd {__version__}")
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument(
        "-q", "--quiet", dest="log_quiet", action="store_true", help="print warnings and results only, no progress"
    )
    loud.add_argument("-v", "--verbose", dest="log_verbose", action="store_true", help="print debug lines too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    code = _run(argv)
    if "RANK" in os.environ and "LOCAL_RANK" in os.environ:  # a torchrun process (distributed.launched)
        from . import distributed

        distributed.leave(code)  # exits now: no interpreter teardown, which can abort a peer
    return code


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logs.setup(logs.level_of(args.log_quiet, args.log_verbose))
    debug = os.environ.get("ASR_KD_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"asr-kd {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `asr-kd validate big.csv | head`
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UserError as err:  # every error a user can fix (config, manifest, audio, cache, bundle ...)
        if debug:
            raise
        print(f"asr-kd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a missing, unreadable, read-only or full path met anywhere
        if debug:
            raise
        print(
            f"asr-kd {args.command}: error: {describe_os_error(err)} (ASR_KD_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    # `python -m asr_kd.cli` loads this file as __main__, a second copy of the module; run the
    # real asr_kd.cli so that commands' UserError is the class main() catches.
    from asr_kd.cli import main as _main

    sys.exit(_main())
