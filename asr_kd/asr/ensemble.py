"""Stage ``ensemble``: the teachers' combined frame posteriors, cached per utterance ID.

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

import logging
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from asr_kd import distributed
from asr_kd.asr.data import merge_features
from asr_kd.asr.decode import greedy_decode
from asr_kd.asr.inference import System, ensemble_log_probs, write_ensemble
from asr_kd.distill import CacheWriter, join_parts, part_dir
from asr_kd.distill.cache_format import load_shard, shard_paths
from asr_kd.io import read_json, write_json

log = logging.getLogger(__name__)

__all__ = ["cache_ensemble", "cache_ensembles", "describe_ensemble", "ensemble_log_probs"]


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


def cache_ensembles(ctx) -> None:
    """Stage ``ensemble``: per ensemble, ``ensemble.json`` (members, method, weights), its
    top-k frame posteriors of the training set and the transfer set (cached by utterance ID)
    and its greedy transcripts of both (``train_hyps.json``, for the sequence-level student).
    An interrupted run resumes: cached utterances are not written again.

    Under torchrun each of the N processes caches every N-th utterance (by length) into its
    own part of the cache, and rank 0 joins the parts into one cache
    (:mod:`asr_kd.distill.cache_join`)."""

    exp, e = ctx.exp, ctx.settings.ensemble
    tok = exp.tokenizer()
    rank, world = distributed.rank(), distributed.world_size()
    for name, members in ctx.plan.ensembles.items():
        if distributed.is_main():
            describe_ensemble(ctx, name)
        root, hyps_path = exp.cache_dir(name), exp.train_hyps_file(name)
        feats = exp.feats("train")
        if ctx.settings.transfer.active:
            feats = merge_features(feats, exp.feats("transfer"))
        finished: set[str] = set()
        if world > 1:  # this process's share; what an interrupted single-process run cached stays
            finished = {i for path in shard_paths(root) for i in load_shard(path)["ids"]}
            share = sorted(feats, key=lambda u: (len(feats[u]), u))[rank::world]
            feats = {u: feats[u] for u in share}
            target, hyps_file = part_dir(root, rank, world), part_dir(root, rank, world) / "hyps.json"
        else:
            target, hyps_file = root, hyps_path
        writer = CacheWriter(
            target, num_classes=exp.summary()["num_classes"], k=int(e.top_k), fingerprint=ctx.cache_fingerprint(name)
        )
        hyps = read_json(hyps_file) if hyps_file.exists() else {}
        log.info(f"  {name}: caching top-{e.top_k} posteriors of {', '.join(members)}")
        system = System([exp.load(m, device=ctx.device) for m in members], method=e.method, weights=e.weights)
        with writer:
            for ids, lp, n in system.batches(feats, device=ctx.device):
                for b, (utt, h) in enumerate(zip(ids, greedy_decode(lp, n), strict=False)):
                    hyps[utt] = tok.decode(h)
                    if utt not in writer and utt not in finished:
                        writer.add(utt, lp[b, : int(n[b])].float().cpu())
        write_json(hyps_file, hyps)
        distributed.barrier()
        if world > 1 and distributed.is_main():
            for i in range(world):
                hyps = {**hyps, **read_json(part_dir(root, i, world) / "hyps.json")}
            old = read_json(hyps_path) if hyps_path.exists() else {}
            write_json(hyps_path, {**old, **hyps})
            log.info(f"  {name}: joined {join_parts(root, world)} utterances from {world} processes")
        distributed.barrier()


def describe_ensemble(ctx, name: str) -> None:
    """Write ``ensemble.json`` of ensemble ``name``, so ``asr-kd evaluate EXP/ensembles/NAME``
    decodes it as configured (members, combination method, weights)."""
    e = ctx.settings.ensemble
    write_ensemble(
        ctx.exp.ensemble_dir(name), [ctx.exp.bundle(m) for m in ctx.plan.ensembles[name]], e.method, e.weights
    )
