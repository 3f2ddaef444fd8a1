"""``asr-kd run CONFIG``: the ASR distillation recipe, stage by stage.

Runs every stage of a recipe config (prepare, teachers, guidance, ensemble + cache,
students, score, report), skipping stages that finished and resuming the one that was
interrupted. ``--stage`` / ``--stop-stage`` (numbers or names) pick a range; ``--teacher
i`` trains teacher i alone (after ``prepare``), so N teachers can train on N machines
that share the experiment folder. ``--list`` prints the stages.

Example
-------
    asr-kd run recipes/synth_en/config.yaml --preset demo
    asr-kd run recipes/synth_en/config.yaml --preset full --teacher 2
    asr-kd run recipes/synth_en/config.yaml --preset demo --stage score --set score.rtf_repeats=5
    torchrun --nproc-per-node 4 -m asr_kd run recipes/synth_en/config.yaml --preset full   # data-parallel
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an ASR distillation recipe (all stages, resumable)")
    p.add_argument("config", help="recipe config, e.g. recipes/synth_en/config.yaml")
    p.add_argument("--preset", default=None, help="a preset of the config (e.g. demo, full, tiny)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=20 (repeatable)",
    )
    p.add_argument("--stage", default="1", help="first stage to run (number or name; default 1)")
    p.add_argument("--stop-stage", default=None, help="last stage to run (number or name; default: the last)")
    p.add_argument("--teacher", type=int, default=None, help="train only teacher I (after prepare)")
    p.add_argument(
        "--list",
        action="store_true",
        help="list the stages and what a run would do with each (done, runs again and why), then exit",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from asr_kd import distributed
    from asr_kd.asr.recipe import AsrRecipe, load_asr_config
    from asr_kd.io import write_text

    cfg = load_asr_config(args.config, args.preset, args.set)
    torch.set_num_threads(int(cfg["threads"]))
    recipe = AsrRecipe(cfg)
    if distributed.launched():  # started by torchrun: join the other processes
        distributed.init_from_env(recipe.ctx.device)
        if not distributed.is_main():  # rank 0 reports; the others speak only of trouble
            logging.getLogger().setLevel(logging.WARNING)
    if args.list:
        for i, (name, status) in enumerate(recipe.status(), 1):
            if status not in ("", "done", "interrupted"):
                status = "runs again: " + status  # and so does every stage that uses it
            print(f"{i:2d} {name:<20} {status}".rstrip())
        distributed.finish()
        return 0
    command = (
        "asr-kd run " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2
        else f"asr-kd run {args.config}"
    )
    if distributed.is_main():
        write_text(recipe.ctx.exp.command_file, command + "\n")
    began = time.time()
    log.info(f"experiment: {recipe.exp} (device {recipe.ctx.device}, {cfg['threads']} threads)")
    recipe.run(args.stage, args.stop_stage, teacher=args.teacher)
    distributed.finish()  # every process leaves together (a lone early exit can abort a peer)
    log.info(f"done in {(time.time() - began) / 60:.1f} min; results: {recipe.ctx.exp.results_md}")
    return 0
