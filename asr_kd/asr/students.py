"""Stages ``student-*``: the students, from scratch and distilled from an ensemble.

- ``scratch``: CTC on the transcripts (the baseline every distilled student is compared with);
- ``kd``: ``w_hard * CTC + w_soft * T^2 * KL(ensemble_T || student_T)`` per frame, against the
  ensemble's cached top-k posteriors looked up by utterance ID (or the MSE between logits);
  frames whose ensemble top class is blank count ``blank_weight``; utterances of the transfer
  set (:mod:`asr_kd.asr.transfer`), which have no transcript, count the soft term only; with
  ``kd.targets: live`` the ensemble's members run frozen on each training batch instead, so the soft
  targets are theirs on the augmented features the student sees (consistent teaching), and with
  ``kd.mixup`` on mixes of two utterances (function matching with mixup; soft targets only);
- ``sequence``: CTC on the ensemble's greedy transcripts of the training set (and of the
  transfer set, when there is one).

Example
-------
    from asr_kd.asr.students import train_student
    train_student(ctx, ctx.plan.spec("student-kd"))    # writes EXP/models/student-kd/model.pt
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr_kd.asr.context import Context
from asr_kd.asr.specs import ModelSpec
from asr_kd.asr.train import train_spec
from asr_kd.errors import UserError

log = logging.getLogger(__name__)


def train_student(ctx: Context, spec: ModelSpec) -> Path:
    """Train student ``spec`` as its variant says."""
    if spec.variant == "scratch":
        return train_spec(ctx, spec)
    if spec.variant == "sequence":
        assert spec.ensemble is not None
        hyps = ctx.exp.train_hyps(spec.ensemble)
        if not spec.transfer:  # the ensemble's transcripts of the training set only
            train = ctx.exp.texts("train")
            hyps = {u: h for u, h in hyps.items() if u in train}
        tok = ctx.exp.tokenizer()
        kept = {u: h for u, h in hyps.items() if tok.encode(h)}
        log.info(f"  {spec.name}: {len(kept)} of {len(hyps)} ensemble transcripts are non-empty and used")
        if not kept:
            raise UserError(
                f"{spec.name}: the ensemble transcribed every training utterance as empty, so there "
                "is nothing to train on; train the teachers longer (train.epochs) or drop "
                "'sequence' from students.variants"
            )
        return train_spec(ctx, spec, texts=kept)
    from asr_kd.distill import DistillationLoss

    kd, ensemble = spec.kd, spec.ensemble
    assert kd is not None and ensemble is not None, f"{spec.name}: a distilled student needs kd and an ensemble"
    loss = DistillationLoss(
        temperature=float(kd.temperature),
        hard_weight=float(kd.hard_weight),
        soft_weight=float(kd.soft_weight),
        soft=kd.soft,
    )
    log.info(f"  {spec.name}: {loss} (blank frames weighted {kd.blank_weight}) against {ensemble}")
    unlabelled = ctx.transfer_ids() if spec.transfer else []
    if unlabelled:
        log.info(f"  {spec.name}: also {len(unlabelled)} transfer utterances, soft term only")
    hints = None
    if kd.hint_weight > 0:
        from asr_kd.asr.hints import Hints
        from asr_kd.models.bundle import load_bundle

        member = ctx.plan.systems[ensemble][kd.hint_teacher]
        teacher = load_bundle(ctx.exp.model_dir(member)).model
        hints = Hints(teacher, kd.hint_layer, float(kd.hint_weight), kd.hint_loss)
        log.info(f"  {spec.name}: hint term {kd.hint_weight} x {kd.hint_loss} at {kd.hint_layer!r} of {member}")
    targets: dict = {"teacher_cache": ctx.ensemble_cache(ensemble)}
    if kd.targets == "live":
        targets = {**live_teachers(ctx, ensemble), "live_mixup": float(kd.mixup)}
        mixed = f", each batch first mixed with itself (Beta({kd.mixup}, {kd.mixup}))" if kd.mixup else ""
        log.info(f"  {spec.name}: soft targets from {ensemble}'s members run on each augmented batch (live){mixed}")
    return train_spec(
        ctx, spec, unlabelled=unlabelled, kd=loss, blank_weight=float(kd.blank_weight), hints=hints, **targets
    )


def live_teachers(ctx: Context, ensemble: str) -> dict:
    """``CTCBrain`` hparams for soft targets computed on each batch: the members of ``ensemble``
    (frozen, loaded from their bundles) and the ensemble's combination."""
    from asr_kd.models.bundle import load_bundle

    if ensemble not in ctx.plan.ensembles:
        raise UserError(
            f"students.kd.targets: live runs an ensemble's members on each batch; {ensemble!r} is not a plain "
            f"ensemble ({sorted(ctx.plan.ensembles)}); use targets: cache for it"
        )
    members = [load_bundle(ctx.exp.model_dir(m)).model for m in ctx.plan.ensembles[ensemble]]
    e = ctx.settings.ensemble
    return {"live_teachers": members, "live_method": e.method, "live_weights": e.weights}
