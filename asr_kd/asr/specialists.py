"""Stage ``specialists``: frame-level specialists over the vocabulary (the paper's Section 5, for CTC).

With ``specialists.enabled``:

1. The generalist is ``teacher-0``. Piece subsets come from K-means on the correlation columns
   of its frame posteriors on the validation set (frames where it emits a piece, not blank; no
   transcript is used), one run per K of ``specialists.clusters``; ``specialist-0`` ..
   ``specialist-{M-1}`` are their subsets in order. A tokenizer with many pieces (``unigram``,
   256 or 512) gives confusable classes; 30 characters give few.
2. A specialist sees blank, its subset and one dustbin token. It starts from the generalist's
   weights (:func:`specialist_init`: the output rows of blank and the subset copied, the
   dustbin row built from the others) and is fine-tuned with CTC for ``epochs`` at ``lr`` on
   the training set, each run of pieces outside its subset written as one dustbin token
   (:func:`specialist_targets`). Utterances hold pieces of most subsets, so sampling is left
   natural and the dustbin needs no shift.
3. The combination (:class:`SpecialistSystem`): per frame, the specialists whose subset holds
   one of the generalist's ``top_n`` non-blank classes are active, and the distribution
   minimising ``KL(p_g, q) + sum_m KL(p_m, q_m)`` is found by ``combine_steps`` Adam steps
   (:func:`asr_kd.distill.specialists.combine_specialists`); frames with no active specialist
   keep the generalist's distribution. It is decoded and scored like an ensemble (row
   ``specialists``) and its top-k posteriors are cached like an ensemble's, so
   ``student-kd-spec`` (``student-kd``'s size, seed and loss) learns from it.

Example
-------
>>> specialist_targets([5, 2, 9, 7, 2], subset=[2, 7])   # 2 -> 1, 7 -> 2, others -> dustbin 3
[3, 1, 3, 2, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import Tensor

from asr_kd.asr.data import merge_features
from asr_kd.asr.decode import greedy_decode
from asr_kd.asr.inference import System
from asr_kd.asr.specs import GENERALIST, SPECIALISTS
from asr_kd.distill import CacheWriter
from asr_kd.distill.specialists import active_specialists, cluster_classes, combine_specialists, specialist_state
from asr_kd.errors import UserError
from asr_kd.io import read_json, write_json
from asr_kd.models.bundle import LoadedModel

log = logging.getLogger(__name__)


def specialist_targets(tokens: Sequence[int], subset: Sequence[int]) -> list[int]:
    """A transcript's token IDs in a specialist's classes: blank 0, the subset's pieces 1..|S|
    in order, and one dustbin token ``|S| + 1`` for each run of pieces outside the subset."""
    index = {piece: i + 1 for i, piece in enumerate(subset)}
    dustbin = len(subset) + 1
    out: list[int] = []
    for t in tokens:
        mapped = index.get(int(t), dustbin)
        if not (mapped == dustbin and out and out[-1] == dustbin):
            out.append(mapped)
    return out


def specialist_init(state: Mapping[str, Tensor], subset: Sequence[int], output: str = "output") -> dict[str, Tensor]:
    """A specialist's starting weights from the generalist's ``state``: every layer copied but
    the output layer, cut to blank, the subset's rows and a dustbin row (the other pieces' mean
    weights; their mean bias plus the log of their number, the log-sum-exp of equal logits).

    >>> import torch
    >>> s = specialist_init({"output.weight": torch.eye(5), "output.bias": torch.zeros(5)}, [1, 3])
    >>> s["output.weight"].shape, round(float(s["output.bias"][-1]), 3)
    (torch.Size([4, 5]), 0.693)
    """
    try:
        return specialist_state(state, output, [0, *subset])
    except ValueError as err:
        raise UserError(f"specialist subset {list(subset)}: {err}") from None


def piece_subsets(generalist: System, feats: Mapping[str, Tensor], clusters: Sequence[int], device: str = "cpu"):
    """Piece subsets (vocabulary IDs, blank excluded): K-means on the generalist's non-blank frames,
    one run per K, in order. Fewer than K subsets from a run is refused (M is fixed by the config)."""
    frames = []
    for _, lp, n in generalist.batches(feats, device=device):
        for b in range(len(n)):
            p = lp[b, : int(n[b])].exp().cpu()
            frames.append(p[p.argmax(-1) != 0, 1:])
    probs = torch.cat(frames)
    if len(probs) < 2:
        raise UserError("the generalist (teacher-0) emits no piece on the validation set; train it longer")
    subsets = []
    for k in clusters:
        found = [[c + 1 for c in s] for s in cluster_classes(probs, int(k))]
        if len(found) != int(k):
            raise UserError(f"K-means found {len(found)} piece subsets for K={k}; lower specialists.clusters")
        subsets += found
    return subsets


class SpecialistSystem(System):
    """The generalist and its specialists as one system: per frame, the KL-minimising combination.

    ``members`` are the generalist, then the specialists (``|subset| + 2`` outputs each).
    """

    def __init__(
        self, members: Sequence[LoadedModel], subsets: Sequence[Sequence[int]], top_n: int, steps: int, lr: float
    ) -> None:
        super().__init__(list(members))
        self.subsets = [list(s) for s in subsets]
        self.top_n, self.steps, self.lr = int(top_n), int(steps), float(lr)

    @torch.no_grad()
    def log_probs(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        lp_g, n = self._nets[0](feats, frames)
        outs = [net(feats, frames)[0] for net in self._nets[1:]]
        valid = torch.arange(lp_g.shape[1], device=n.device)[None, :] < n[:, None]
        flat_g = lp_g[valid]
        active = active_specialists(flat_g, self.subsets, self.top_n)
        rows = active.any(1)
        if rows.any():
            with torch.enable_grad():
                q = combine_specialists(
                    flat_g[rows],
                    [o[valid][rows] for o in outs],
                    [[0, *s] for s in self.subsets],  # a specialist's classes: blank, its subset
                    active[rows],
                    self.steps,
                    self.lr,
                )
            flat_g = flat_g.clone()
            flat_g[rows] = q.to(flat_g.dtype)
        out = lp_g.clone()
        out[valid] = flat_g
        return out, n


def load_specialists(ctx, device: str = "cpu") -> SpecialistSystem:
    """The run's generalist + specialists (after stage ``specialists``), on ``device``."""
    exp, sp = ctx.exp, ctx.settings.specialists
    path = exp.root / SPECIALISTS / "subsets.json"
    if not path.exists():
        raise UserError(f"{path}: missing; run stage specialists first")
    members = [exp.load(m, device=device) for m in ctx.plan.systems[SPECIALISTS]]
    return SpecialistSystem(members, read_json(path)["subsets"], sp.top_n, sp.combine_steps, sp.combine_lr)


def train_specialists(ctx) -> None:
    """Stage ``specialists``: subsets, the specialists (each resumable, skipped when trained),
    then the combination's top-k posteriors of the training (and transfer) set, cached by ID."""
    from asr_kd.asr.train import train_spec

    exp, sp = ctx.exp, ctx.settings.specialists
    folder = exp.root / SPECIALISTS
    path = folder / "subsets.json"
    if not path.exists():
        generalist = System([exp.load(GENERALIST, device=ctx.device)])
        subsets = piece_subsets(generalist, exp.feats("valid"), sp.clusters, ctx.device)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(path, {"generalist": GENERALIST, "clusters": list(sp.clusters), "subsets": subsets})
    subsets = read_json(path)["subsets"]
    tok = exp.tokenizer()
    state = exp.load(GENERALIST).model.state_dict()
    for i, subset in enumerate(subsets):
        spec = ctx.plan.spec(f"specialist-{i}")
        log.info(f"  {spec.name}: {len(subset)} pieces + blank + dustbin: {[tok.decode([p]) for p in subset][:12]}")
        train_spec(
            ctx,
            spec,
            num_classes=len(subset) + 2,
            token_map=partial(specialist_targets, subset=subset),
            init_state=specialist_init(state, subset),
        )
    cache_combination(ctx)


def cache_combination(ctx) -> None:
    """The combination's top-k posteriors and greedy transcripts of the training (and transfer)
    set, like an ensemble's (:func:`asr_kd.asr.ensemble.cache_ensembles`); resumable."""
    exp, e = ctx.exp, ctx.settings.ensemble
    tok = exp.tokenizer()
    feats = exp.feats("train")
    if ctx.settings.transfer.active:
        feats = merge_features(feats, exp.feats("transfer"))
    system = load_specialists(ctx, ctx.device)
    writer = CacheWriter(
        exp.cache_dir(SPECIALISTS),
        num_classes=exp.summary()["num_classes"],
        k=int(e.top_k),
        fingerprint=ctx.cache_fingerprint(SPECIALISTS),
    )
    hyps_file = exp.train_hyps_file(SPECIALISTS)
    hyps = read_json(hyps_file) if hyps_file.exists() else {}
    todo = [u for u in feats if u not in writer]
    log.info(f"  {SPECIALISTS}: caching the combination's top-{e.top_k} posteriors of {len(todo)} utterances")
    with writer:
        for ids, lp, n in system.batches(feats, todo, device=ctx.device):
            for b, (utt, h) in enumerate(zip(ids, greedy_decode(lp, n), strict=False)):
                hyps[utt] = tok.decode(h)
                writer.add(utt, lp[b, : int(n[b])].float().cpu())
    write_json(hyps_file, hyps)
