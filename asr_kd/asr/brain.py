"""CTC training on SpeechBrain's ``Brain``: teachers, scratch students, distilled students.

One class trains every model of the recipe; what differs is configuration:

- teacher or scratch student: CTC only;
- guided teacher (Kurata & Audhkhasi): CTC + ``guide_weight`` x the framewise
  spike term against a reference teacher's spikes (:mod:`asr_kd.asr.guidance`);
- distilled student: ``DistillationLoss`` with CTC as the hard term and the
  soft term against the ensemble's cached top-k posteriors, looked up by
  utterance ID (never batch index) in a :class:`~asr_kd.distill.TeacherCache`;
  or, with ``live_teachers``, against the members' combined posteriors on the very
  batch the student sees, SpecAugment included (consistent teaching: Beyer et al.
  2022's function matching; the MNIST recipe's jittered transfer images); with
  ``live_mixup`` each batch is first mixed with a shuffled copy of itself (:func:`mix_batch`),
  so the members label inputs no utterance holds (function matching with mixup).

Batches are SpeechBrain ``PaddedBatch`` objects with ``id``, ``feats``
(``(batch, frames, n_mels)`` with relative lengths) and ``tokens`` (with
relative lengths). The ``frontend`` module (normalisation, SpecAugment on
training batches) maps features to features without changing the number of
frames, so cached teacher frames line up with the student's.

Validation computes the loss and the greedy-decoding WER with SpeechBrain's
``ErrorRateStats``; each epoch ends with a checkpoint (atomic, see
:mod:`asr_kd.asr.checkpoint`) that keeps the best by validation WER.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.utils.metric_stats import ErrorRateStats
from torch import Tensor

from asr_kd import distributed
from asr_kd.asr.data import NO_TRANSCRIPT
from asr_kd.asr.decode import greedy_decode
from asr_kd.asr.guidance import guided_loss
from asr_kd.asr.inference import ensemble_log_probs
from asr_kd.distill import DistillationLoss, TeacherCache, TopK
from asr_kd.models.frontend import frame_mask

log = logging.getLogger(__name__)


def absolute_lengths(relative: Tensor, max_len: int) -> Tensor:
    """SpeechBrain's relative lengths (fractions of the padded length) to counts."""
    return torch.round(relative * max_len).long()


def ctc_loss(log_probs: Tensor, tokens: Tensor, out_lengths: Tensor, token_lengths: Tensor) -> Tensor:
    """CTC per target token, averaged over the utterances that have a transcript.

    An utterance with no tokens (a transfer-set utterance: no transcript) adds nothing; a batch
    without any transcript gives 0. With every utterance transcribed this is ``F.ctc_loss``'s
    ``reduction="mean"``.

    >>> lp = torch.randn(2, 6, 4).log_softmax(-1)
    >>> tok, n = torch.tensor([[1, 2], [3, 0]]), torch.tensor([6, 6])
    >>> first = ctc_loss(lp[:1], tok[:1], n[:1], torch.tensor([2]))
    >>> torch.allclose(ctc_loss(lp, tok, n, torch.tensor([2, 0])), first)
    True
    >>> float(ctc_loss(lp, tok, n, torch.tensor([0, 0])))
    0.0
    """
    args = (log_probs.transpose(0, 1), tokens, out_lengths, token_lengths)
    labelled = token_lengths > 0
    if bool(labelled.all()):
        return F.ctc_loss(*args, blank=0, reduction="mean", zero_infinity=True)
    per_utt = F.ctc_loss(*args, blank=0, reduction="none", zero_infinity=True) / token_lengths.clamp(min=1)
    return (per_utt * labelled).sum() / labelled.sum().clamp(min=1)


def mix_batch(feats: Tensor, lengths: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Mixup of a feature batch with a shuffled copy of itself, one weight per utterance.

    Item ``i`` becomes ``lam_i * x_i + (1 - lam_i) * x_j`` (``j`` a random partner, padding zeroed
    first), ``lam_i ~ Beta(alpha, alpha)``, and is as long as the longer of the two. No transcript
    describes the mix, so only soft targets computed on it (live teachers) can teach it.

    >>> x = torch.ones(3, 5, 2)
    >>> mixed, n = mix_batch(x, torch.tensor([5, 4, 2]), alpha=1.0)
    >>> mixed.shape, bool((n >= torch.tensor([2, 2, 2])).all()), bool((mixed <= 1 + 1e-6).all())
    (torch.Size([3, 5, 2]), True, True)
    """
    real = frame_mask(lengths, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
    feats = feats * real
    partner = torch.randperm(feats.shape[0], device=feats.device)
    lam = torch.distributions.Beta(alpha, alpha).sample((feats.shape[0],)).to(feats.device, feats.dtype)
    mixed = lam[:, None, None] * feats + (1 - lam[:, None, None]) * feats[partner]
    return mixed, torch.maximum(lengths, lengths[partner])


class CTCBrain(sb.Brain):
    """Trains a CTC acoustic model, optionally with distillation and spike guidance.

    Expected ``modules``: ``model`` (a :class:`~asr_kd.models.acoustic.CTCAcousticModel`)
    and ``frontend`` (``frontend(feats, lengths, augment) -> feats``).
    Expected ``hparams`` (a mapping): ``detokenize`` (token ids -> text), and
    optionally ``kd`` (:class:`DistillationLoss`) with ``teacher_cache``
    (:class:`TeacherCache`) and ``blank_weight`` (weight of the soft term on frames
    whose teacher top-1 class is blank; default 1), ``guide_weight`` with ``guide_spikes``
    (``utt_id -> (frames,) long tensor``), ``name`` (the model's name in the epoch log lines),
    ``live_teachers`` (frozen ensemble members: the soft targets are their combined posteriors
    on each training batch, after the front end's augmentation, instead of the cache's; with
    ``live_method`` and ``live_weights``, the ensemble's combination; ``live_mixup`` > 0: the batch
    mixed first, :func:`mix_batch`'s ``alpha``),
    ``hint_teacher`` and ``hint_weight`` with a ``hint`` module (:mod:`asr_kd.asr.hints`: the frozen
    teacher runs on each training batch, the hint term is added with that weight),
    ``seed`` (each training epoch starts from ``torch.manual_seed(seed * 1000 + epoch)``, so a
    run resumed from an end-of-epoch checkpoint repeats the interrupted epoch exactly),
    ``lr_at`` (``(epoch, step) -> learning rate``, set before every optimiser step) and
    ``history`` (``(epoch, stats) -> None``, called after each validation).
    """

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        feats, rel = batch.feats
        lengths = absolute_lengths(rel, feats.shape[1])
        feats = self.modules.frontend(feats, lengths, augment=stage == sb.Stage.TRAIN)
        live = getattr(self.hparams, "live_teachers", None)
        mixup = float(getattr(self.hparams, "live_mixup", 0.0))
        if stage == sb.Stage.TRAIN and live and mixup > 0:
            feats, lengths = mix_batch(feats, lengths, mixup)
        teacher = getattr(self.hparams, "hint_teacher", None)
        if stage == sb.Stage.TRAIN and teacher is not None:
            with torch.no_grad():  # its hooked layer's output is the hint term's target
                teacher.eval()(feats, lengths)
        self._live: tuple[Tensor, Tensor] | None = None
        if stage == sb.Stage.TRAIN and live:
            with torch.no_grad():  # the members label the features the student is about to see
                method = getattr(self.hparams, "live_method", "arithmetic")
                self._live = ensemble_log_probs(
                    live, feats, lengths, method, getattr(self.hparams, "live_weights", None)
                )
        logits, out_lengths = self.modules.model(feats, lengths)
        return logits, out_lengths

    def compute_objectives(self, predictions, batch, stage):
        logits, out_lengths = predictions
        tokens, rel = batch.tokens
        token_lengths = absolute_lengths(rel, tokens.shape[1])
        token_lengths = torch.where(tokens[:, 0] == NO_TRANSCRIPT, 0, token_lengths)  # transfer set
        log_probs = logits.log_softmax(-1)
        ctc = ctc_loss(log_probs, tokens, out_lengths, token_lengths)
        loss = ctc
        hp = self.hparams
        if stage == sb.Stage.TRAIN and getattr(hp, "kd", None) is not None:
            loss = self._distillation_loss(logits, out_lengths, ctc, batch.id)
        if stage == sb.Stage.TRAIN and getattr(hp, "hint_weight", 0) > 0:
            loss = loss + hp.hint_weight * self.modules.hint(mask=frame_mask(out_lengths, logits.shape[1]))
        if stage == sb.Stage.TRAIN and getattr(hp, "guide_weight", 0) > 0:
            spikes = self._spikes(batch.id, logits.shape[1]).to(logits.device)
            loss = loss + hp.guide_weight * guided_loss(log_probs, spikes)
        if stage != sb.Stage.TRAIN:
            hyps = greedy_decode(log_probs, out_lengths)
            refs = [tok[: int(n)].tolist() for tok, n in zip(tokens.cpu(), token_lengths.cpu(), strict=False)]
            self.wer_metric.append(
                batch.id,
                [hp.detokenize(h).split() for h in hyps],
                [hp.detokenize(r).split() for r in refs],
            )
        return loss

    def _distillation_loss(self, logits: Tensor, out_lengths: Tensor, ctc: Tensor, ids: Sequence[str]):
        targets: Tensor | TopK
        if getattr(self, "_live", None) is not None:
            targets, mask = self._live_targets(out_lengths, logits.shape[1])
        else:
            targets, mask = self._cached_targets(out_lengths, logits.shape[1], ids)
        targets, mask = targets.to(logits.device), mask.to(logits.device)
        weights = None
        blank_weight = getattr(self.hparams, "blank_weight", 1.0)
        if blank_weight != 1.0:  # frames whose teacher top-1 is blank count blank_weight
            top = targets.indices[..., 0] if isinstance(targets, TopK) else targets.argmax(-1)
            weights = torch.where(top == 0, blank_weight, 1.0).to(logits.dtype)
        kd: DistillationLoss = self.hparams.kd
        return kd(logits, targets, hard=ctc, mask=mask, weights=weights).total

    def _live_targets(self, out_lengths: Tensor, frames: int) -> tuple[Tensor, Tensor]:
        assert self._live is not None
        log_probs, n = self._live
        if not torch.equal(n.cpu(), out_lengths.cpu()) or log_probs.shape[1] != frames:
            raise RuntimeError(
                f"the live teachers produced {n.tolist()} frames, the student {out_lengths.tolist()}. Teachers "
                "and student must share the front end and subsampling (model.stack: 1 for both)."
            )
        return log_probs, frame_mask(out_lengths, frames)

    def _cached_targets(self, out_lengths: Tensor, frames: int, ids: Sequence[str]) -> tuple[TopK, Tensor]:
        cache: TeacherCache = self.hparams.teacher_cache
        if not cache.checked:
            raise RuntimeError(
                f"teacher cache {cache.root} was opened without a fingerprint; open it with the "
                "recipe's fingerprint (features, subsampling, tokenizer, teachers) so a cache made "
                "for another configuration is refused"
            )
        for utt, n_out in zip(ids, out_lengths.tolist(), strict=False):
            n_cached = cache.num_frames(utt)
            if n_cached != n_out:
                raise RuntimeError(
                    f"utterance {utt!r}: the teacher cache has {n_cached} frames, the student "
                    f"produced {n_out}. Teacher and student must share the front end and "
                    "subsampling; rebuild the cache for this configuration."
                )
        return cache.batch(ids, num_frames=frames)

    def _spikes(self, ids: Sequence[str], frames: int) -> Tensor:
        spikes: Mapping[str, Tensor] = self.hparams.guide_spikes
        out = torch.full((len(ids), frames), -100, dtype=torch.long)
        for b, utt in enumerate(ids):
            s = spikes[utt]
            out[b, : len(s)] = s
        return out

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN and epoch is not None:
            self._epoch = epoch
            seed = getattr(self.hparams, "seed", None)
            if seed is not None:
                torch.manual_seed(int(seed) * 1000 + int(epoch))
        if stage != sb.Stage.TRAIN:
            self.wer_metric = ErrorRateStats()

    def on_fit_batch_start(self, batch, should_step):
        lr_at = getattr(self.hparams, "lr_at", None)
        if lr_at is not None and getattr(self, "optimizer", None) is not None:
            lr = lr_at(getattr(self, "_epoch", 1), self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:  # under torchrun: the mean over the processes' shares of each batch
            self.train_loss = distributed.mean(stage_loss)
            return
        wer = self.wer_metric.summarize("error_rate") / 100  # SpeechBrain's percentage as a fraction
        self.last_stats = {"loss": stage_loss, "WER": wer}
        if stage == sb.Stage.VALID:
            name = getattr(self.hparams, "name", "model")
            history = getattr(self.hparams, "history", None)
            if distributed.is_main():  # every process validates on the whole set; rank 0 reports
                log.info(
                    f"{name} epoch {epoch}: train loss {self.train_loss:.3f}, valid loss {stage_loss:.3f}, "
                    f"valid WER {100 * wer:.2f}"
                )
            if history is not None and distributed.is_main():
                history(
                    epoch, {"train_loss": float(self.train_loss), "valid_loss": float(stage_loss), "valid_wer": wer}
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(meta={"WER": wer, "epoch": epoch}, min_keys=["WER"], num_to_keep=1)
