"""Specialist ensembles (the paper's Section 5): a generalist plus specialists with a dustbin.

- :func:`cluster_classes`: class subsets by K-means on the columns of the
  covariance matrix of the generalist's predictions (no true labels needed),
  normalised to correlations: raw covariance columns are dominated by each
  class's own variance, and a test with planted confusable groups failed with
  them (a 2-class group split in two) and passes with correlations.
- A specialist sees ``|S| + 1`` classes: its subset ``S`` and one dustbin for
  all the others. :func:`specialist_labels` and :func:`collapse_to_specialist`
  map hard labels and full distributions into that space;
  :func:`specialist_batch_indices` draws training data half from the subset,
  half at random; :func:`raise_dustbin` then corrects the dustbin logit for
  that oversampling (:func:`dustbin_shift`: the exact log odds ratio, where
  the paper's wording gives an approximation).
- :func:`active_specialists` and :func:`combine_specialists`: at inference, the
  specialists whose subset holds one of the generalist's top-``n`` classes
  are active, and the full distribution ``q = softmax(z)`` minimises
  ``KL(p_g || q) + sum_m KL(p_m || q_m)``, where ``q_m`` is ``q`` with its mass
  outside ``S_m`` summed into the dustbin. There is no closed form; ``z`` is
  found by gradient steps per case (batched here). The resulting ``q`` can
  serve as soft targets for distilling the whole ensemble into one net, which
  the paper did not do. :func:`table4` counts its gains the way the paper's Table 4 does.

Example
-------
>>> import torch
>>> p_g = torch.tensor([[0.5, 0.3, 0.1, 0.1]]).log()
>>> subsets = [[0, 1]]
>>> # the specialist is sure it is class 1 among {0, 1}, and agrees on the dustbin mass
>>> p_m = torch.tensor([[0.02, 0.78, 0.2]]).log()
>>> q = combine_specialists(p_g, [p_m], subsets, torch.tensor([[True]])).exp()
>>> bool(q[0, 1] > q[0, 0])
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor


def _assign(points: Tensor, centre: Tensor, capacity: int | None) -> Tensor:
    """Each point's nearest centre; with ``capacity``, at most that many points per centre (the
    closest point-centre pairs first: a greedy balanced assignment)."""
    dist = torch.cdist(points, centre)
    if capacity is None:
        return dist.argmin(1)
    k = centre.shape[0]
    assign, room = torch.full((len(points),), -1, dtype=torch.long), [capacity] * k
    for pair in torch.argsort(dist.flatten(), stable=True).tolist():
        i, c = divmod(pair, k)
        if assign[i] < 0 and room[c] > 0:
            assign[i], room[c] = c, room[c] - 1
    return assign


def cluster_classes(
    probs: Tensor, num_clusters: int, iterations: int = 100, seed: int = 0, balanced: bool = False
) -> list[list[int]]:
    """Disjoint class subsets from K-means on the correlation columns of ``probs``.

    Args:
        probs: ``(N, C)`` generalist probabilities on (unlabelled) data.
        num_clusters: number of subsets (specialists).
        balanced: at most ``ceil(C / num_clusters)`` classes a subset. Plain K-means puts the many
            classes that correlate with no other (all about equally far apart) in one subset.

    Returns non-empty sorted class lists, ordered by their smallest class.
    """
    n, c = probs.shape
    if not 1 <= num_clusters <= c:
        raise ValueError(f"num_clusters must be in 1..{c} (the classes), got {num_clusters}")
    # Row j: class j against every class. A (C, C) matrix, small: on the CPU.
    points = torch.corrcoef(probs.detach().double().cpu().T).nan_to_num(0.0)
    g = torch.Generator().manual_seed(seed)
    # k-means++ initialisation
    centres = [points[int(torch.randint(c, (1,), generator=g))]]
    for _ in range(1, num_clusters):
        d2 = torch.cdist(points, torch.stack(centres)).min(1).values.pow(2)
        pick = torch.multinomial(d2 / d2.sum() if d2.sum() > 0 else torch.ones(c) / c, 1, generator=g)
        centres.append(points[int(pick)])
    centre = torch.stack(centres)
    capacity = -(-c // num_clusters) if balanced else None
    assign = _assign(points, centre, capacity)
    for _ in range(iterations):
        for k in range(num_clusters):
            members = assign == k
            if members.any():
                centre[k] = points[members].mean(0)
            else:  # an empty cluster takes the point farthest from its centre
                far = torch.cdist(points, centre).min(1).values.argmax()
                centre[k] = points[far]
        new = _assign(points, centre, capacity)
        if torch.equal(new, assign):
            break
        assign = new
    subsets = [sorted(torch.nonzero(assign == k).flatten().tolist()) for k in range(num_clusters)]
    return sorted((s for s in subsets if s), key=lambda s: s[0])


def _check_subset(subset: Sequence[int], num_classes: int) -> Tensor:
    idx = torch.as_tensor(list(subset), dtype=torch.long)
    if idx.numel() == 0 or len(set(idx.tolist())) != idx.numel():
        raise ValueError(f"a specialist subset must be non-empty and without repeats, got {list(subset)}")
    if idx.min() < 0 or idx.max() >= num_classes:
        raise ValueError(f"subset {list(subset)} has classes outside 0..{num_classes - 1}")
    return idx


def specialist_labels(labels: Tensor, subset: Sequence[int], num_classes: int) -> Tensor:
    """Full labels -> specialist labels: position in ``subset``, or ``len(subset)`` (dustbin)."""
    idx = _check_subset(subset, num_classes)
    table = torch.full((num_classes,), len(idx), dtype=torch.long, device=labels.device)
    table[idx.to(labels.device)] = torch.arange(len(idx), device=labels.device)
    return table[labels]


def collapse_to_specialist(log_probs: Tensor, subset: Sequence[int]) -> Tensor:
    """``(..., C)`` log-probs -> ``(..., |S| + 1)``: the subset's, then the dustbin's (all others)."""
    idx = _check_subset(subset, log_probs.shape[-1])
    outside = torch.ones(log_probs.shape[-1], dtype=torch.bool, device=log_probs.device)
    outside[idx] = False
    inside = log_probs[..., idx.to(log_probs.device)]
    if outside.any():
        dustbin = torch.logsumexp(log_probs[..., outside], dim=-1, keepdim=True)
    else:
        dustbin = torch.full_like(inside[..., :1], float("-inf"))
    return torch.cat([inside, dustbin], dim=-1)


def specialist_state(state: Mapping[str, Tensor], output: str, keep: Sequence[int]) -> dict[str, Tensor]:
    """A specialist's starting weights: a copy of the generalist's ``state`` whose output layer
    (``output.weight``, ``output.bias``) keeps the units of ``keep`` and gains a dustbin unit.

    The dustbin gets the other units' mean weights, and their mean bias plus the log of their
    number: the log-sum-exp of equal logits, so at the start it holds about the mass the
    generalist gives the classes outside ``keep``.

    >>> s = specialist_state({"out.weight": torch.eye(5), "out.bias": torch.zeros(5)}, "out", [1, 3])
    >>> s["out.weight"].shape, round(float(s["out.bias"][-1]), 3)
    (torch.Size([3, 5]), 1.099)
    """
    out = {k: v.detach().clone() for k, v in state.items()}
    w, b = out[f"{output}.weight"], out[f"{output}.bias"]
    idx = torch.as_tensor(list(keep), dtype=torch.long)
    rest = torch.ones(len(b), dtype=torch.bool)
    rest[idx] = False
    if not rest.any():
        raise ValueError(f"a specialist keeping units {list(keep)} keeps every class: it would have no dustbin")
    out[f"{output}.weight"] = torch.cat([w[idx], w[rest].mean(0, keepdim=True)])
    out[f"{output}.bias"] = torch.cat([b[idx], (b[rest].mean() + math.log(int(rest.sum()))).view(1)])
    return out


def specialist_batch_indices(
    labels: Tensor, subset: Sequence[int], size: int, generator: torch.Generator | None = None
) -> tuple[Tensor, float]:
    """Indices of a training sample half from the subset, half at random, and its dustbin shift.

    Returns ``(indices, shift)``; after training on such samples, pass ``shift`` to
    :func:`raise_dustbin`. ``shift`` is computed from the expected shares of the
    subset, ``n`` in ``labels`` and ``s = 1/2 + n/2`` in the samples, by
    :func:`dustbin_shift`.
    """
    idx = _check_subset(subset, int(labels.max()) + 1 if labels.numel() else 0).to(labels.device)
    in_subset = torch.isin(labels, idx)
    pool = torch.nonzero(in_subset).flatten().cpu()
    if pool.numel() == 0:
        raise ValueError(f"no example of the subset {list(subset)} in the data")
    half = size // 2
    chosen = torch.cat(
        [
            pool[torch.randint(len(pool), (half,), generator=generator)],
            torch.randint(len(labels), (size - half,), generator=generator),
        ]
    )
    natural = float(in_subset.float().mean())
    sampled = (half + (size - half) * natural) / size
    return chosen.to(labels.device), dustbin_shift(natural, sampled)


def dustbin_shift(natural_share: float, sampled_share: float) -> float:
    """The dustbin-logit increment that undoes oversampling the subset: the log odds ratio.

    With the subset's share ``n`` in the data and ``s`` in the specialist's
    training samples, Bayes' rule rescales subset classes by ``n/s`` and the
    dustbin by ``(1-n)/(1-s)``; up to softmax's shift invariance that is
    ``log(s (1-n) / (n (1-s)))`` added to the dustbin logit alone. The paper
    words it as "the log of the proportion by which the specialist class is
    oversampled", ``log(s/n)``, which is close only when ``s`` and ``n`` are small.

    >>> round(dustbin_shift(0.02, 0.51), 3)   # 300 of 15,000 classes, half-from-subset sampling
    3.932
    """
    n, s = natural_share, sampled_share
    if not (0 < n < 1 and 0 < s < 1):
        raise ValueError(f"shares must be in (0, 1), got natural {n}, sampled {s}")
    return math.log(s * (1 - n) / (n * (1 - s)))


def raise_dustbin(logits: Tensor, shift: float) -> Tensor:
    """Add ``shift`` (from :func:`dustbin_shift`) to the dustbin (last) logit."""
    out = logits.clone()
    out[..., -1] += shift
    return out


def active_specialists(generalist_log_probs: Tensor, subsets: Sequence[Sequence[int]], top_n: int = 1) -> Tensor:
    """``(N, M)`` bool: specialist ``m`` is active for case ``i`` when its subset holds one of
    the generalist's ``top_n`` classes for that case."""
    num_classes = generalist_log_probs.shape[-1]
    top = generalist_log_probs.topk(top_n, dim=-1).indices  # (N, top_n)
    member = torch.zeros(len(subsets), num_classes, dtype=torch.bool)
    for m, s in enumerate(subsets):
        member[m, _check_subset(s, num_classes)] = True
    member = member.to(top.device)
    return member[:, top].any(-1).T  # (N, M)


def combine_specialists(
    generalist_log_probs: Tensor,
    specialist_log_probs: Sequence[Tensor],
    subsets: Sequence[Sequence[int]],
    active: Tensor,
    steps: int = 300,
    lr: float = 0.1,
) -> Tensor:
    """Full ``(N, C)`` log-probs minimising ``KL(p_g||q) + sum_m active_m KL(p_m||q_m)``.

    Args:
        generalist_log_probs: ``(N, C)``.
        specialist_log_probs: per specialist ``(N, |S_m| + 1)`` (dustbin last).
        subsets: each specialist's classes.
        active: ``(N, M)`` bool from :func:`active_specialists`.
        steps, lr: Adam steps on the logits ``z`` of ``q``, started at ``log p_g``, the learning
            rate decaying from ``lr`` to 0 (cosine); computed in float64.
    """
    if len(specialist_log_probs) != len(subsets) or active.shape[-1] != len(subsets):
        raise ValueError("need one specialist output and one active column per subset")
    if not active.any():
        return torch.log_softmax(generalist_log_probs.detach().float(), -1)
    # Adam's steps keep their size however small the gradient, so at a constant lr it jitters
    # around the optimum by about lr (a case whose specialists agree with the generalist moved
    # by 0.01-0.02 in log-probability); the lr decays to 0 (cosine) so the last steps settle
    p_g = torch.log_softmax(generalist_log_probs.detach().double(), -1)
    z = p_g.clone().requires_grad_(True)
    # KL(p || q) = sum p log p - sum p log q, and the first sum is a constant: each term's
    # gradient is the cross-entropy's, with p computed once; a specialist's term is computed
    # on the rows where it is active only (elsewhere it is 0)
    num_classes = p_g.shape[-1]
    terms: list[tuple[Tensor, Tensor, Tensor | None, Tensor]] = []
    for m, (lp, subset) in enumerate(zip(specialist_log_probs, subsets, strict=True)):
        rows = active[:, m].nonzero().squeeze(-1).to(z.device)
        if len(rows):
            inside = _check_subset(subset, num_classes).to(z.device)
            outside = torch.ones(num_classes, dtype=torch.bool, device=z.device)
            outside[inside] = False
            p = torch.softmax(lp.detach().double()[rows], -1)
            terms.append((rows, inside, outside if outside.any() else None, p if outside.any() else p[:, :-1]))
    probs_g = p_g.exp()
    opt = torch.optim.Adam([z], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    for _ in range(steps):
        log_q = torch.log_softmax(z, -1)
        loss = -(probs_g * log_q).sum()
        for sel, keep, rest, p_m in terms:  # q collapsed into each active specialist's classes
            lq = log_q[sel]
            parts = [lq[:, keep]] if rest is None else [lq[:, keep], lq[:, rest].logsumexp(-1, keepdim=True)]
            loss = loss - (p_m * torch.cat(parts, -1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return torch.log_softmax(z.detach(), -1).float()


def table4(
    gen_pred: Tensor, comb_pred: Tensor, active: Tensor, subsets: Sequence[Sequence[int]], y: Tensor
) -> list[dict[str, Any]]:
    """The paper's Table 4: test cases grouped by how many active specialists cover the true class
    ``y``, with the generalist's and the combination's correct cases in each group.

    Args:
        gen_pred, comb_pred: ``(N,)`` the classes the generalist and the combination pick.
        active: ``(N, M)`` bool from :func:`active_specialists`.
        subsets: each specialist's classes.
        y: ``(N,)`` true classes.

    >>> rows = table4(torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([[True], [False]]), [[0, 1]],
    ...               torch.tensor([1, 1]))
    >>> [(r["covering"], r["cases"], r["correct_gain"]) for r in rows]
    [(0, 1, 1), (1, 1, 1)]
    """
    num_classes = max([int(y.max()) if len(y) else 0, *(max(s) for s in subsets if s)]) + 1
    member = torch.zeros(len(subsets), num_classes, dtype=torch.bool, device=y.device)
    for m, s in enumerate(subsets):
        member[m, list(s)] = True
    covering = (active & member[:, y].T).sum(1)
    gen_ok = gen_pred == y
    comb_ok = comb_pred == y
    rows = []
    for c in sorted(set(covering.tolist())):
        sel = covering == c
        g, q = int(gen_ok[sel].sum()), int(comb_ok[sel].sum())
        rows.append(
            {
                "covering": int(c),
                "cases": int(sel.sum()),
                "generalist_correct": g,
                "combined_correct": q,
                "correct_gain": q - g,
                "relative_accuracy_change": (q - g) / g if g else None,
            }
        )
    return rows
