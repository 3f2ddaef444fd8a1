"""The teacher ensemble: combined frame posteriors, and caching them per utterance ID.

Example
-------
>>> import torch
>>> from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
>>> members = [CTCAcousticModel(AcousticConfig(num_classes=7, n_mels=8, hidden=8, conv_channels=2))
...            for _ in range(3)]
>>> lp, n = ensemble_log_probs(members, torch.randn(2, 40, 8), torch.tensor([40, 21]))
>>> lp.shape, n.tolist()
(torch.Size([2, 10, 7]), [10, 6])
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from asr_kd.distill import CacheWriter, combine


@torch.no_grad()
def ensemble_log_probs(
    members: Sequence[nn.Module],
    feats: Tensor,
    lengths: Tensor,
    method: str = "arithmetic",
    weights: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Members' combined ``(batch, frames, classes)`` log-probabilities and frame counts.

    Every member must produce the same frames (one front end, one subsampling).
    """
    outputs, out_lengths = [], None
    for i, model in enumerate(members):
        model.eval()
        logits, n = model(feats, lengths)
        if out_lengths is not None and not torch.equal(n, out_lengths):
            raise ValueError(f"ensemble member {i} produced other frame counts than member 0")
        outputs.append(logits)
        out_lengths = n
    out_lengths = out_lengths.to(feats.device)
    mask = torch.arange(outputs[0].shape[1], device=feats.device)[None, :] < out_lengths[:, None]
    return combine(outputs, method=method, weights=weights, mask=mask), out_lengths


def cache_ensemble(
    members: Sequence[nn.Module],
    batches: Iterable[tuple[Sequence[str], Tensor, Tensor]],
    writer: CacheWriter,
    method: str = "arithmetic",
    weights: Sequence[float] | None = None,
    total: int | None = None,
) -> int:
    """Write the ensemble's top-k frame posteriors of every utterance to ``writer``.

    Args:
        batches: ``(ids, feats, lengths)`` batches; utterances already in the
            cache are skipped, so an interrupted run resumes where it stopped.
        total: number of batches, for the progress bar.

    Returns the number of utterances written by this call. The caller closes
    the writer (``with CacheWriter(...)``), which marks the cache complete.
    """
    written = 0
    for ids, feats, lengths in tqdm(batches, total=total, desc="caching ensemble posteriors", unit="batch"):
        todo = [b for b, utt in enumerate(ids) if utt not in writer]
        if not todo:
            continue
        sel = torch.tensor(todo)
        log_probs, n = ensemble_log_probs(members, feats[sel], lengths[sel], method, weights)
        for row, b in enumerate(todo):
            writer.add(ids[b], log_probs[row, : int(n[row])].cpu())
            written += 1
    return written
