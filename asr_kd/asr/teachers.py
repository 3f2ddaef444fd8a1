"""Stages ``teacher-I`` and ``guided-I``: the full-size CTC teachers of the ensemble.

Teachers differ by seed (and by optional per-teacher overrides). A guided teacher is trained
with CTC plus a framewise term that puts its spikes where teacher 0 put its own
(:mod:`asr_kd.asr.guidance`, Kurata & Audhkhasi 2019); the ``spikes`` stage computes them.

Example
-------
    from asr_kd.asr.teachers import train_teacher
    train_teacher(ctx, ctx.plan.spec("teacher-1"))     # writes EXP/models/teacher-1/model.pt
"""

from __future__ import annotations

from pathlib import Path

import torch

from asr_kd.asr.context import Context
from asr_kd.asr.specs import ModelSpec
from asr_kd.asr.train import train_spec


def train_teacher(ctx: Context, spec: ModelSpec) -> Path:
    """Train teacher ``spec`` (guided by teacher 0's spikes when ``spec.guided``)."""
    hparams = {}
    if spec.guided:
        hparams = {
            "guide_weight": float(ctx.settings.teachers.guide_weight),
            "guide_spikes": torch.load(ctx.exp.spikes_file, weights_only=False),
        }
    return train_spec(ctx, spec, **hparams)
