"""Command line of the MNIST recipe, shared by ``recipes/mnist/run.py`` and ``asr-kd mnist``.

Example
-------
    python recipes/mnist/run.py --preset smoke
    asr-kd mnist --preset main --seed 0 --set teacher.epochs=30
    asr-kd mnist --preset main --seed 0 --set device=cuda      # on a GPU
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .config import RecipeError, default_config_path, load_config
from .mnist import MnistNotFound, default_data_dir
from .recipe import Recipe


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        default="main",
        help="config preset: smoke, main, short, sweep, transfer, full, online, specialists, paper",
    )
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="seed(s); one run per seed")
    p.add_argument("--config", default=None, help="recipe YAML (default: recipes/mnist/config.yaml)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the MNIST idx files (default: ../shared/data/mnist next to the repository)",
    )
    p.add_argument("--out-dir", default=None, help="models and results.json (default: the config's out_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--experiments", nargs="+", default=None, help="run only these experiments")
    p.add_argument("--report", action="store_true", help="after running (or alone), write tables and the plot")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from results.json")
    p.add_argument("--report-dir", default=None, help="where tables and plot go (default: the config's report_dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else default_config_path()
    overrides = [*args.set, "device=cpu"] if args.report_only else args.set  # a report needs no GPU
    cfg = load_config(config, args.preset, overrides)
    torch.set_num_threads(int(cfg["threads"]))
    out_dir = Path(args.out_dir) if args.out_dir else config.parent / cfg["out_dir"]
    command = "python recipes/mnist/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not args.report_only:
        data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
        for seed in args.seed:
            Recipe(cfg, seed, data_dir, out_dir, command, progress=not args.quiet).run(args.experiments)
    if args.report or args.report_only:
        from .report import write_report

        report_dir = Path(args.report_dir) if args.report_dir else config.parent / cfg["report_dir"]
        for path in write_report(out_dir / "results.json", report_dir):
            print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recipes/mnist/run.py", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except (MnistNotFound, RecipeError) as err:
        print(f"mnist recipe: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnist recipe: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
