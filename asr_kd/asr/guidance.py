"""Guided CTC training (Kurata & Audhkhasi, Interspeech 2019): align spike timings.

Independently trained CTC models put their (spiky) non-blank posteriors on
different frames, which spoils averaging their frame posteriors and
frame-level distillation. Guided training fixes a reference: the first
teacher's forced alignment of each transcript (``torchaudio.functional.
forced_align``) marks, per frame, the token it emits (a "spike") or nothing;
every other model is trained with CTC plus a framewise term that raises its
log-probability of the reference's token at the reference's spike frames.

Example
-------
>>> import torch
>>> # a reference that is confident: token 2 at frame 1, token 3 at frame 3
>>> ref = torch.full((1, 5, 4), -9.0)
>>> ref[0, [0, 2, 4], 0] = 0.0; ref[0, 1, 2] = 0.0; ref[0, 3, 3] = 0.0
>>> spikes = forced_spikes(ref.log_softmax(-1), torch.tensor([5]),
...                        torch.tensor([[2, 3]]), torch.tensor([2]))
>>> spikes.tolist()
[[-100, 2, -100, 3, -100]]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor

from asr_kd.asr.data import encode_transcripts
from asr_kd.asr.inference import System
from asr_kd.io import write_atomic

log = logging.getLogger(__name__)

IGNORE = -100


def forced_frames(
    log_probs: Tensor,
    lengths: Tensor,
    targets: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
) -> Tensor:
    """Per-frame labels of a reference model's forced alignment (``torchaudio.functional.
    forced_align``): the CTC path of the transcript that the model finds most likely, blank
    or token on every frame (the CTC counterpart of a hybrid system's frame labels).

    Args:
        log_probs: ``(batch, frames, classes)`` reference log-probabilities.
        lengths: ``(batch,)`` frames per item.
        targets: ``(batch, max_tokens)`` token indices (padding ignored).
        target_lengths: ``(batch,)`` tokens per item.

    Returns:
        ``(batch, frames)`` long tensor: the path's label per frame, ``IGNORE`` (-100) on
        padding and on every frame of an item that cannot be aligned (an empty transcript,
        or fewer frames than CTC needs).
    """
    out = torch.full(log_probs.shape[:2], IGNORE, dtype=torch.long)
    lp = log_probs.detach().float().cpu()
    for b in range(lp.shape[0]):
        n, m = int(lengths[b]), int(target_lengths[b])
        if m == 0:
            continue
        tgt = targets[b, :m].detach().cpu().long()
        repeats = int((tgt[1:] == tgt[:-1]).sum())
        if n < m + repeats:
            continue
        path, _ = AF.forced_align(lp[b : b + 1, :n], tgt.unsqueeze(0).int(), blank=blank)
        out[b, :n] = path[0].long()
    return out.to(log_probs.device)


def forced_spikes(
    log_probs: Tensor,
    lengths: Tensor,
    targets: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
) -> Tensor:
    """Per-frame spike labels from a reference model's forced alignment (:func:`forced_frames`,
    same arguments): the token on the first frame of each aligned token (its spike),
    ``IGNORE`` (-100) elsewhere and on items that cannot be aligned."""
    path = forced_frames(log_probs, lengths, targets, target_lengths, blank)
    prev = torch.cat([torch.full_like(path[:, :1], IGNORE), path[:, :-1]], dim=1)
    starts = (path != blank) & (path != IGNORE) & (path != prev)
    return torch.where(starts, path, torch.full_like(path, IGNORE))


def guided_loss(log_probs: Tensor, spikes: Tensor) -> Tensor:
    """Mean negative log-probability of the reference token over spike frames.

    ``log_probs`` ``(batch, frames, classes)``; ``spikes`` ``(batch, frames)`` from
    :func:`forced_spikes` (``IGNORE`` frames do not count). 0 when there is no spike.
    """
    if spikes.shape != log_probs.shape[:2]:
        raise ValueError(
            f"spike labels {tuple(spikes.shape)} must match the model's frames "
            f"{tuple(log_probs.shape[:2])}: were they made with the same front end?"
        )
    if not (spikes != IGNORE).any():
        return log_probs.sum() * 0.0
    return F.nll_loss(log_probs.flatten(0, 1), spikes.flatten(), ignore_index=IGNORE)


def spike_agreement(log_probs: Tensor, spikes: Tensor) -> float:
    """Share of the reference's spike frames where the model's argmax is the same token."""
    sel = spikes != IGNORE
    if not sel.any():
        return float("nan")
    return float((log_probs.argmax(-1)[sel] == spikes[sel]).float().mean())


def spike_overlap(a: Tensor, b: Tensor, mask: Tensor | None = None, blank: int = 0) -> float:
    """Share of the frames where model ``a``'s argmax is non-blank on which ``b``'s is too.

    ``a``, ``b``: ``(batch, frames, classes)`` scores of two models over the same
    frames. Low values mean the models spike on different frames, which spoils
    averaging their posteriors (the problem guided training solves).
    """
    spike_a = a.argmax(-1) != blank
    spike_b = b.argmax(-1) != blank
    if mask is not None:
        spike_a = spike_a & mask
    if not spike_a.any():
        return float("nan")
    return float((spike_b[spike_a]).float().mean())


def aligned_frames(
    system: System,
    feats: Mapping[str, Tensor],
    tokens: Mapping[str, list[int]],
    device: str = "cpu",
    spikes: bool = False,
) -> dict[str, Tensor]:
    """``{id: (frames,) long}``: ``system``'s forced alignment of each utterance's ``tokens``, one
    label per frame (:func:`forced_frames`), or only its spikes (:func:`forced_spikes`)."""
    align = forced_spikes if spikes else forced_frames
    out: dict[str, Tensor] = {}
    for ids, lp, n in system.batches(feats, list(tokens), device=device):
        targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(tokens[i]) for i in ids], batch_first=True)
        lengths = torch.tensor([len(tokens[i]) for i in ids])
        path = align(lp.cpu(), n.cpu(), targets, lengths)
        for b, utt in enumerate(ids):
            out[utt] = path[b, : int(n[b])].clone()
    return out


def compute_spikes(ctx) -> None:
    """Stage ``spikes``: teacher 0's forced spikes on every training utterance, in
    ``EXP/guidance/spikes.pt`` (``{id: (frames,) long}``; -100 where it emits nothing)."""
    exp = ctx.exp
    tokens = encode_transcripts(exp.texts("train"), exp.tokenizer().encode)
    system = System([exp.load("teacher-0", device=ctx.device)])
    spikes = aligned_frames(system, exp.feats("train"), tokens, ctx.device, spikes=True)
    aligned = sum(int((s >= 0).any()) for s in spikes.values())
    log.info(f"  forced spikes for {aligned} of {len(spikes)} training utterances")
    write_atomic(exp.spikes_file, lambda tmp: torch.save(spikes, tmp))
