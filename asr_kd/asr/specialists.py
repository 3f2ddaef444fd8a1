"""Stage ``specialists``: frame-level specialists over the vocabulary (the paper's Section 5, for CTC).

With ``specialists.enabled``:

1. The generalist is ``teacher-0``. Piece subsets come from K-means on the correlation columns
   of its frame posteriors on the validation set (frames where it emits a piece, not blank; no
   transcript is used), one run per K of ``specialists.clusters`` (``balanced``: at most
   ceil(pieces / K) pieces a subset, where plain K-means lumps the rarely confused together);
   ``specialist-0`` .. ``specialist-{M-1}`` are their subsets in order. A tokenizer with many pieces (``unigram``,
   256 or 512) gives confusable classes; 30 characters give few.
2. A specialist sees blank, its subset and one dustbin token. It starts from the generalist's
   weights (:func:`specialist_init`: the output rows of blank and the subset copied, the
   dustbin row built from the others) and is fine-tuned with CTC for ``epochs`` at ``lr`` on
   the training set, pieces outside its subset written as dustbin tokens
   (:func:`specialist_targets`): with ``dustbin: run`` one per run of them, with ``piece`` one
   each, so the specialist keeps the generalist's one spike per piece. ``subset_share`` 0 trains
   on every utterance; 0.5 is the paper's sampling (:func:`subset_draw`): every utterance that
   holds a piece of the subset and as many others drawn at random, the dustbin logit then raised
   by the log odds of that oversampling among the targets (:func:`target_dustbin_shift`).
   ``transfer``: each specialist also fine-tunes on the transfer set, with the plain ensemble's
   greedy transcripts (:func:`specialist_texts`): audio the generalist never heard, labelled by a
   better system than the generalist, so a specialist has something to learn that it does not
   already know (the paper's JFT specialists learned from a generalist short of capacity).
3. The combination (:class:`SpecialistSystem`): per frame, the specialists whose subset holds
   one of the generalist's ``top_n`` classes are active (blank counts among them and is in no
   subset: with ``top_n`` 1 a frame where the generalist emits blank keeps its distribution,
   so the specialists can fix a piece it emits, not a piece it drops), and the distribution
   minimising ``KL(p_g, q) + sum_m KL(p_m, q_m)`` is found by ``combine_steps`` Adam steps
   (:func:`asr_kd.distill.specialists.combine_specialists`); frames with no active specialist
   keep the generalist's distribution. It is decoded and scored like an ensemble (row
   ``specialists``) and its top-k posteriors are cached like an ensemble's, so
   ``student-kd-spec`` (``student-kd``'s size, seed and loss) learns from it.
4. Stage ``specialists-table`` (:mod:`asr_kd.asr.specialists_table`) reports what they gained.

Example
-------
>>> specialist_targets([5, 2, 9, 7, 2], subset=[2, 7])   # 2 -> 1, 7 -> 2, others -> dustbin 3
[3, 1, 3, 2, 1]
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import Tensor
from tqdm import tqdm

from asr_kd.asr.data import encode_transcripts, merge_features
from asr_kd.asr.inference import SpecialistSystem, System, load_system
from asr_kd.asr.specs import GENERALIST, SPECIALISTS
from asr_kd.distill import CacheWriter
from asr_kd.distill.specialists import cluster_classes, dustbin_shift, specialist_state
from asr_kd.errors import UserError
from asr_kd.io import read_json, write_json

log = logging.getLogger(__name__)


def specialist_targets(tokens: Sequence[int], subset: Sequence[int], dustbin: str = "run") -> list[int]:
    """A transcript's token IDs in a specialist's classes: blank 0, the subset's pieces 1..|S|
    in order, and the dustbin token ``|S| + 1`` for each run of pieces outside the subset
    (``dustbin="run"``) or for each such piece (``"piece"``).

    >>> specialist_targets([5, 6, 2], [2]), specialist_targets([5, 6, 2], [2], dustbin="piece")
    ([2, 1], [2, 2, 1])
    """
    index = {piece: i + 1 for i, piece in enumerate(subset)}
    bin_id = len(subset) + 1
    out: list[int] = []
    for t in tokens:
        mapped = index.get(int(t), bin_id)
        if not (dustbin == "run" and mapped == bin_id and out and out[-1] == bin_id):
            out.append(mapped)
    return out


def subset_draw(tokens: Mapping[str, Sequence[int]], subset: Sequence[int], share: float, seed: int = 0) -> list[str]:
    """The utterances a specialist trains on: every one holding a piece of ``subset``, and as many
    of the others, drawn with ``seed``, as make those ``share`` of the whole (0.5: the paper's half
    from the subset); every utterance when ``share`` is 0 or the subset's already hold that share.

    >>> tokens = {"a": [1, 2], "b": [3], "c": [4], "d": [5, 3]}
    >>> len(subset_draw(tokens, [2], 0.5)), "a" in subset_draw(tokens, [2], 0.5), len(subset_draw(tokens, [2], 0.0))
    (2, True, 4)
    """
    pieces = set(subset)
    mine = [u for u in sorted(tokens) if pieces.intersection(tokens[u])]
    if share <= 0 or not mine or len(mine) >= share * len(tokens):
        return sorted(tokens)
    rest = [u for u in sorted(tokens) if not pieces.intersection(tokens[u])]
    drawn = random.Random(seed).sample(rest, min(len(rest), round(len(mine) * (1 - share) / share)))
    return sorted([*mine, *drawn])


def target_dustbin_shift(targets: Mapping[str, Sequence[int]], chosen: Sequence[str], dustbin: int) -> float:
    """The dustbin-logit shift that undoes training on ``chosen`` instead of all ``targets`` (a
    specialist's, :func:`specialist_targets`): the log odds ratio of the subset's share among the
    non-blank targets (:func:`~asr_kd.distill.specialists.dustbin_shift`); 0 when nothing changed.

    >>> round(target_dustbin_shift({"a": [1, 2], "b": [2], "c": [2, 2]}, ["a", "b"], 2), 3)  # 1/5 -> 1/3: odds x2
    0.693
    """

    def share(ids: Sequence[str]) -> float:
        flat = [t for u in ids for t in targets[u]]
        return sum(t != dustbin for t in flat) / max(1, len(flat))

    natural, sampled = share(list(targets)), share(chosen)
    if not (0 < natural < 1 and 0 < sampled < 1) or abs(natural - sampled) < 1e-12:
        return 0.0
    return dustbin_shift(natural, sampled)


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


def piece_subsets(
    generalist: System,
    feats: Mapping[str, Tensor],
    clusters: Sequence[int],
    device: str = "cpu",
    balanced: bool = False,
) -> list[list[int]]:
    """Piece subsets (vocabulary IDs, blank excluded): K-means on the generalist's non-blank frames,
    one run per K, in order (``balanced``: at most ceil(pieces / K) a subset). Fewer than K subsets
    from a run is refused (M is fixed by the config)."""
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
        found = [[c + 1 for c in s] for s in cluster_classes(probs, int(k), balanced=balanced)]
        if len(found) != int(k):
            raise UserError(f"K-means found {len(found)} piece subsets for K={k}; lower specialists.clusters")
        subsets += found
    return subsets


def specialist_texts(ctx) -> dict[str, str]:
    """The specialists' transcripts by utterance ID: the training set's and, with
    ``specialists.transfer``, the plain ensemble's non-empty greedy transcripts of the transfer set."""
    texts = ctx.exp.texts("train")
    if not (ctx.plan.specialists and ctx.plan.specialists[0].transfer):
        return texts
    hyps = ctx.exp.train_hyps("ensemble")
    extra = {u: h for u, h in hyps.items() if u not in texts and h.strip()}
    log.info(f"  specialists: {len(texts)} transcribed + {len(extra)} transfer utterances (the ensemble's transcripts)")
    return {**texts, **extra}


def load_specialists(ctx, device: str = "cpu") -> SpecialistSystem:
    """The run's generalist + specialists (after stage ``specialists``), on ``device``."""
    path = ctx.exp.root / SPECIALISTS / "specialists.json"
    if not path.exists():
        raise UserError(f"{path}: missing; run stage specialists first")
    system = load_system(path.parent, device=device)
    assert isinstance(system, SpecialistSystem)
    return system


def train_specialists(ctx) -> None:
    """Stage ``specialists``: subsets, the specialists (each resumable, skipped when trained),
    then the combination's top-k posteriors of the training (and transfer) set, cached by ID."""
    from asr_kd.asr.train import train_spec

    exp, sp = ctx.exp, ctx.settings.specialists
    folder = exp.root / SPECIALISTS
    path = folder / "subsets.json"
    if not path.exists():
        generalist = System([exp.load(GENERALIST, device=ctx.device)])
        subsets = piece_subsets(generalist, exp.feats("valid"), sp.clusters, ctx.device, sp.balanced)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(path, {"generalist": GENERALIST, "clusters": list(sp.clusters), "subsets": subsets})
    subsets = read_json(path)["subsets"]
    tok, texts = exp.tokenizer(), specialist_texts(ctx)
    tokens = encode_transcripts(texts, tok.encode, skip=log.warning)
    state = exp.load(GENERALIST).model.state_dict()
    shifts, drawn = [], []
    for i, subset in enumerate(subsets):
        spec = ctx.plan.spec(f"specialist-{i}")
        chosen = set(subset_draw(tokens, subset, sp.subset_share, spec.seed))
        drawn.append(len(chosen))
        to_mine = partial(specialist_targets, subset=subset, dustbin=sp.dustbin)
        shifts.append(target_dustbin_shift({u: to_mine(t) for u, t in tokens.items()}, sorted(chosen), len(subset) + 1))
        log.info(
            f"  {spec.name}: {len(subset)} pieces + blank + dustbin: {[tok.decode([p]) for p in subset][:12]}; "
            f"{len(chosen)} of {len(tokens)} utterances, dustbin logit {shifts[-1]:+.3f}"
        )
        train_spec(
            ctx,
            spec,
            texts={u: text for u, text in texts.items() if u in chosen},
            num_classes=len(subset) + 2,
            token_map=to_mine,
            init_state=specialist_init(state, subset),
        )
    describe_specialists(ctx, subsets, shifts, drawn)
    cache_combination(ctx)


def describe_specialists(
    ctx, subsets: Sequence[Sequence[int]], shifts: Sequence[float], utterances: Sequence[int]
) -> None:
    """``specialists/specialists.json``: members (bundles relative to the folder), subsets, their
    dustbin shifts, training utterances and how they combine, so ``asr-kd evaluate EXP/specialists``
    decodes it too."""
    sp, folder = ctx.settings.specialists, ctx.exp.root / SPECIALISTS
    members = [os.path.relpath(ctx.exp.bundle(m), folder) for m in ctx.plan.systems[SPECIALISTS]]
    combine = {"top_n": sp.top_n, "steps": sp.combine_steps, "lr": sp.combine_lr}
    described = {"members": members, "subsets": [list(s) for s in subsets], "dustbin_shifts": list(shifts)}
    described["utterances"] = list(utterances)  # each specialist's training utterances
    write_json(folder / "specialists.json", {**described, **combine})


def cache_combination(ctx) -> None:
    """The combination's top-k posteriors of the training (and transfer) set, cached by ID like
    an ensemble's (:func:`asr_kd.asr.ensemble.cache_ensembles`); a killed run resumes."""
    exp, e = ctx.exp, ctx.settings.ensemble
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
    todo = [u for u in feats if u not in writer]
    log.info(f"  {SPECIALISTS}: caching the combination's top-{e.top_k} posteriors of {len(todo)} utterances")
    with writer:
        batches = system.batches(feats, todo, device=ctx.device)
        total = -(-len(todo) // 32)  # batches of 32 (System.batches)
        for ids, lp, n in tqdm(batches, total=total, desc="specialists", disable=not ctx.settings.progress):
            for b, utt in enumerate(ids):
                writer.add(utt, lp[b, : int(n[b])].float().cpu())
