"""The ASR distillation recipe as a stage graph: corpus -> teachers -> ensemble -> students -> WER.

Stages (each skips finished work and resumes interrupted work, see :mod:`asr_kd.stages`);
each stage's work is a function of its own module, taking the run's
:class:`~asr_kd.asr.context.Context`:

1. ``prepare`` (:mod:`asr_kd.asr.prepare`): corpus, tokenizer, stored features, normalisation.
2. ``teacher-0`` .. ``teacher-{N-1}`` (:mod:`asr_kd.asr.teachers`): full-size CTC teachers.
3. ``spikes`` (:mod:`asr_kd.asr.guidance`): teacher 0's forced alignments (guided training).
4. ``guided-1`` .. ``guided-{N-1}``: teachers that follow teacher 0's spikes.
   ``transfer`` (:mod:`asr_kd.asr.transfer`, when configured): the transfer set's features.
5. ``ensemble`` (:mod:`asr_kd.asr.ensemble`): each ensemble's cached frame posteriors.
   ``specialists`` (:mod:`asr_kd.asr.specialists`, with ``specialists.enabled``): the
   generalist's specialists and their combination's cached posteriors.
6. ``student-*`` (:mod:`asr_kd.asr.students`): scratch, distilled, sequence-level students.
   ``online`` (:mod:`asr_kd.asr.online`, with ``online.enabled``): peers and a student in one pass.
7. ``score`` (:mod:`asr_kd.asr.score`): every model and ensemble on the test set.
   ``small-data`` (:mod:`asr_kd.asr.small_data`, with ``small_data.share`` > 0): the paper's Table 5.
   ``specialists-table`` (with ``specialists.enabled``): the paper's Table 4, per frame.
8. ``report`` (:mod:`asr_kd.asr.report`): ``RESULTS.md``, ``results.json`` and plots.

Which models exist is decided once, from the settings (:func:`asr_kd.asr.specs.plan`).

Example
-------
>>> cfg = load_asr_config(recipe_config_path("synth_en"), "tiny")
>>> cfg["teachers"]["count"], cfg["corpus"]["synth"]["preset"]
(2, 'tiny')
>>> [s.name for s in AsrRecipe(cfg).stages()][:5]
['prepare', 'teacher-0', 'teacher-1', 'spikes', 'guided-1']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from asr_kd import distributed
from asr_kd.asr.context import Context
from asr_kd.asr.ensemble import cache_ensembles
from asr_kd.asr.experiment import Experiment
from asr_kd.asr.guidance import compute_spikes
from asr_kd.asr.online import train_online
from asr_kd.asr.prepare import prepare
from asr_kd.asr.report import write_report
from asr_kd.asr.score import score_systems
from asr_kd.asr.settings import AsrSettings, stable
from asr_kd.asr.small_data import MODELS, score_small_data
from asr_kd.asr.specialists import train_specialists
from asr_kd.asr.specialists_table import score_specialists
from asr_kd.asr.specs import GENERALIST, SPECIALISTS, online_fingerprint
from asr_kd.asr.students import train_student
from asr_kd.asr.teachers import train_teacher
from asr_kd.asr.transfer import prepare_transfer
from asr_kd.asr.workers import train_in_workers
from asr_kd.config import ConfigError, read_config, recipe_config_path
from asr_kd.io import write_json
from asr_kd.stages import Stage, is_done, run_stages, stage_status

log = logging.getLogger(__name__)


def load_asr_config(path: str | os.PathLike, preset: str | None = None, overrides: Sequence[str] = ()) -> dict:
    """Read a recipe config (``base`` + preset + overrides), check it, and complete it with defaults."""
    cfg = read_config(path, preset, overrides)
    settings = AsrSettings.from_dict({k: v for k, v in cfg.items() if k not in ("preset", "overrides")}, f"{path}: ")
    return {**settings.to_dict(), "preset": preset, "overrides": list(overrides), "config_path": str(path)}


class AsrRecipe:
    """One experiment: a config (from :func:`load_asr_config`) and its folder."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = dict(cfg)
        settings = AsrSettings.from_dict(
            {k: v for k, v in cfg.items() if k not in ("preset", "overrides", "config_path")}
        )
        base = Path(cfg["config_path"]).resolve().parent
        exp = Path(settings.exp_dir.format(preset=cfg.get("preset") or "base"))
        self.ctx = Context(settings, Experiment(exp if exp.is_absolute() else base / exp), raw=self.cfg)
        self.exp = self.ctx.exp.root

    def stages(self) -> list[Stage]:
        ctx, s, exp, p = self.ctx, self.ctx.settings, self.ctx.exp, self.ctx.plan
        cfg = s.to_dict()
        stages = [
            Stage(
                "prepare",
                lambda: prepare(ctx),
                stable({k: cfg[k] for k in ("corpus", "tokenizer", "features")}),
                outputs=[exp.data],
            )
        ]
        for spec in p.teachers:
            if spec.guided and "spikes" not in [st.name for st in stages]:
                stages.append(
                    Stage(
                        "spikes",
                        lambda: compute_spikes(ctx),
                        {},
                        depends=["prepare", "teacher-0"],
                        outputs=[exp.guidance],
                    )
                )
            stages.append(
                Stage(
                    spec.name,
                    partial(train_teacher, ctx, spec),
                    stable(spec.fingerprint),
                    depends=["prepare", "spikes"] if spec.guided else ["prepare"],
                    outputs=[exp.model_dir(spec.name)],
                    parallel=True,
                    ddp=True,
                )
            )
        teachers = [st.name for st in stages[1:]]
        transfer = ["transfer"] if s.transfer.active else []
        if transfer:
            stages.append(
                Stage(
                    "transfer",
                    lambda: prepare_transfer(ctx),
                    {"transfer": cfg["transfer"], "corpus": stable({"corpus": cfg["corpus"]})["corpus"]},
                    depends=["prepare"],
                    outputs=[exp.transfer],
                )
            )
        stages.append(
            Stage(
                "ensemble",
                lambda: cache_ensembles(ctx),
                stable({"ensemble": cfg["ensemble"], **({"transfer": cfg["transfer"]} if transfer else {})}),
                depends=["prepare", *teachers, *transfer],
                outputs=[exp.ensembles],
                ddp=True,
            )
        )
        if p.specialists:
            stages.append(
                Stage(
                    SPECIALISTS,
                    lambda: train_specialists(ctx),
                    stable(
                        {
                            "specialists": p.specialists[0].fingerprint,
                            **({"transfer": cfg["transfer"]} if transfer else {}),
                        }
                    ),
                    depends=["prepare", GENERALIST, *transfer, *(["ensemble"] if p.specialists[0].transfer else [])],
                    outputs=[
                        exp.root / SPECIALISTS,
                        exp.cache_dir(SPECIALISTS),
                        *(exp.model_dir(m.name) for m in p.specialists),
                    ],
                )
            )
        for spec in p.students:
            teacher = [] if spec.ensemble is None else [SPECIALISTS if spec.ensemble == SPECIALISTS else "ensemble"]
            stages.append(
                Stage(
                    spec.name,
                    partial(train_student, ctx, spec),
                    stable(spec.fingerprint),
                    depends=["prepare", *teacher],
                    outputs=[exp.model_dir(spec.name)],
                    parallel=True,
                    ddp=True,
                )
            )
        if p.online:
            stages.append(
                Stage(
                    "online",
                    lambda: train_online(ctx),
                    stable(online_fingerprint(s, p.online)),
                    depends=["prepare"],
                    outputs=[exp.model_dir("online"), *(exp.model_dir(m.name) for m in p.online)],
                    ddp=True,
                )
            )
        models = [st.name for st in stages if st.name not in ("prepare", "transfer", "ensemble")]
        stages.append(
            Stage(
                "score",
                lambda: score_systems(ctx),
                {"score": cfg["score"]},
                depends=["prepare", "ensemble", *models],
                outputs=[exp.score_dir],
            )
        )
        small = ["small-data"] if s.small_data.share > 0 else []
        if small:
            stages.append(
                Stage(
                    "small-data",
                    lambda: score_small_data(ctx),
                    {"small_data": cfg["small_data"]},
                    depends=["prepare", "ensemble", *sorted({"teacher-0", s.small_data.align_with}), *MODELS, "score"],
                    outputs=[exp.score_dir / "small_data.json"],
                )
            )
        table = ["specialists-table"] if p.specialists else []
        if table:
            stages.append(
                Stage(
                    "specialists-table",
                    lambda: score_specialists(ctx),
                    stable({"specialists": cfg["specialists"], "table": 2}),  # 2: with each specialist alone
                    depends=["prepare", "ensemble", SPECIALISTS, "score"],
                    outputs=[exp.score_dir / "specialists.json"],
                )
            )
        stages.append(Stage("report", lambda: write_report(ctx), {}, depends=["score", *small, *table]))
        return stages

    def status(self) -> list[tuple[str, str]]:
        """``(stage, what a run would do with it)`` for every stage."""
        stages = self.stages()
        return [(st.name, stage_status(stages, self.exp, i)) for i, st in enumerate(stages, 1)]

    def run(self, start: int | str = 1, stop: int | str | None = None, teacher: int | None = None) -> list[str]:
        """Run stages ``start`` .. ``stop`` (numbers or names), or only teacher ``teacher`` (after prepare)."""
        stages = self.stages()
        names = [st.name for st in stages]
        if teacher is not None:
            n = self.ctx.settings.teachers.count
            if not 0 <= teacher < n:
                raise ConfigError(f"--teacher {teacher}: teachers are 0..{n - 1}")
            wanted = f"teacher-{teacher}" if f"teacher-{teacher}" in names else f"guided-{teacher}"
            run_stages(stages, self.exp, 1, 1)
            k = names.index(wanted) + 1
            return run_stages(stages, self.exp, k, k)
        if distributed.is_main():
            write_json(self.ctx.exp.config_file, self.cfg)
        first, last = _number(start, names) or 1, _number(stop, names) or len(stages)
        # under torchrun the processes train one model together: no worker processes of our own
        jobs = 1 if distributed.active() else int(self.ctx.settings.parallel)
        ran: list[str] = []
        k = first
        while k <= last:  # in order; consecutive parallel stages go to `jobs` worker processes at a time
            end = k
            while jobs > 1 and stages[k - 1].parallel and end < last and stages[end].parallel:
                end += 1
            todo = [st.name for i, st in enumerate(stages[k - 1 : end], k) if not is_done(stages, self.exp, i)]
            if end > k and todo:
                train_in_workers(run_one_stage, self.cfg, todo, jobs, int(self.ctx.settings.threads), self.ctx.exp.logs)
            ran += run_stages(stages, self.exp, k, end)
            k = end + 1
        return ran

    def run_stage(self, name: str) -> None:
        """Run the one stage ``name`` (what a worker process does)."""
        stages = self.stages()
        k = [st.name for st in stages].index(name) + 1
        run_stages(stages, self.exp, k, k)

    # what tests and notebooks reach for
    def model_rows(self) -> list[tuple[str, list[str]]]:
        return self.ctx.plan.rows()

    def texts(self, split: str) -> dict[str, str]:
        return self.ctx.exp.texts(split)

    def feats(self, split: str):
        return self.ctx.exp.feats(split)

    def tokenizer(self):
        return self.ctx.exp.tokenizer()

    def cache_fingerprint(self, ensemble: str) -> dict:
        return self.ctx.cache_fingerprint(ensemble)


def run_one_stage(raw: dict, name: str, threads: int) -> None:
    """A worker's job: the recipe of config ``raw`` with ``threads`` threads runs stage ``name``."""
    sets = [*raw.get("overrides", []), f"threads={threads}", "parallel=1", "progress=false"]
    AsrRecipe(load_asr_config(raw["config_path"], raw.get("preset"), sets)).run_stage(name)


def _number(x: int | str | None, names: Sequence[str]) -> int | None:
    """A stage given by number or name, as its 1-based number."""
    if x is None or isinstance(x, int):
        return x
    if str(x).isdigit():
        return int(x)
    if x not in names:
        raise ConfigError(f"no stage {x!r}; stages: {', '.join(f'{i}={n}' for i, n in enumerate(names, 1))}")
    return names.index(x) + 1


def default_config_path(recipe: str = "synth_en") -> Path:
    """The config of an ASR recipe (``recipes/RECIPE/config.yaml``)."""
    return recipe_config_path(recipe)
