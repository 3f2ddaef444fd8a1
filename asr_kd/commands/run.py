"""``asr-kd run CONFIG``: the ASR recipe, stage by stage (not built yet).

The ASR recipe (teachers -> ensemble -> cache -> students -> WER report) is the
subject of a later issue. Until it lands this command says so plainly and exits
non-zero instead of pretending to run.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an ASR distillation recipe end to end (not built yet)")
    p.add_argument("config", nargs="?", help="recipe config (YAML)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(
        "asr-kd run: the ASR recipe (teacher ensemble -> cached posteriors -> half-size student -> WER)\n"
        "is not built yet. What exists today: `asr-kd demo`, a measured demonstration of the\n"
        "distillation core on a synthetic classification task.",
        file=sys.stderr,
    )
    return 3
