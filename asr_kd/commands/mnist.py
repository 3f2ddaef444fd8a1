"""``asr-kd mnist``: the MNIST distillation recipe (paper Section 3).

Same options as ``python recipes/mnist/run.py``.

Example
-------
    asr-kd mnist --preset smoke
    asr-kd mnist --preset main --seed 0 1 2 --report
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..image.cli import add_arguments

    p = sub.add_parser("mnist", help="MNIST distillation recipe: teacher, students, sweep, omitted classes")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..image.cli import run as run_recipe
    from ..image.config import RecipeError
    from ..image.mnist import MnistNotFound

    try:
        return run_recipe(args)
    except (MnistNotFound, RecipeError) as err:
        raise UserError(str(err)) from None
