"""Combine ensemble members' outputs into one teacher distribution.

The paper's ensemble targets are the arithmetic or geometric mean of the
members' distributions. Members give ``(..., C)`` logits or log-probabilities
over the same positions (same frames for a sequence model); the result is the
ensemble's log-probabilities, shape ``(..., C)``.

Example
-------
>>> import torch
>>> a = torch.log(torch.tensor([[0.9, 0.1]]))
>>> b = torch.log(torch.tensor([[0.5, 0.5]]))
>>> combine([a, b]).exp()
tensor([[0.7000, 0.3000]])
>>> combine([a, b], method="geometric").exp().round(decimals=4)
tensor([[0.7500, 0.2500]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

METHODS = ("arithmetic", "geometric")


def combine(
    members: Sequence[Tensor],
    method: str = "arithmetic",
    weights: Sequence[float] | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Ensemble log-probabilities from member logits or log-probabilities.

    Args:
        members: one ``(..., C)`` tensor per member, logits or log-probs (each is
            passed through ``log_softmax``, so either works).
        method: ``"arithmetic"`` mean of probabilities (default), or
            ``"geometric"``: mean of log-probabilities, renormalised.
        weights: optional non-negative member weights (normalised to sum to 1).
        mask: optional ``(...)`` bool mask of real positions; padded positions
            get the uniform distribution so no NaN or inf reaches a loss.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    shape = members[0].shape
    for i, m in enumerate(members):
        if m.shape != shape:
            raise ValueError(
                f"member {i} has shape {tuple(m.shape)}, member 0 has {tuple(shape)}: "
                "members must cover the same positions (frames) and classes"
            )
    if weights is None:
        weights = [1.0] * len(members)
    if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need {len(members)} non-negative member weights with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    # Members with weight 0 take no part (their -inf log-probs would give 0 * -inf = NaN).
    kept = [(m, x / total) for m, x in zip(members, weights, strict=True) if x > 0]
    w = torch.tensor([x for _, x in kept], dtype=torch.float32, device=members[0].device)
    log_p = torch.stack([torch.log_softmax(m.float(), dim=-1) for m, _ in kept])  # (M, ..., C)
    w = w.view(-1, *([1] * (log_p.dim() - 1)))
    if method == "arithmetic":
        out = torch.logsumexp(log_p + torch.log(w), dim=0)
    else:
        out = torch.log_softmax((log_p * w).sum(0), dim=-1)
    if mask is not None:
        uniform = out.new_full((), -math.log(out.shape[-1]))
        out = torch.where(mask.to(torch.bool).unsqueeze(-1), out, uniform)
    return out
