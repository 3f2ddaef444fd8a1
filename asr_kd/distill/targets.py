"""Teacher targets: dense log-probabilities or a sparse top-k view of them.

A teacher distribution over ``C`` classes at every position can be kept whole
(a ``(..., C)`` tensor of logits or log-probabilities) or as its ``k`` most
probable classes (:class:`TopK`): their log-probabilities at temperature 1 and
their class indices. Anchors: Geras et al. found under 1% of the labels enough.

Missing mass. A :class:`TopK` target drops the ``C - k`` least probable
classes. At temperature ``T`` the kept log-probabilities are divided by ``T``
and *renormalised over the kept classes*: the softened target gives the
dropped classes probability zero, so the soft loss only ever compares the
student on the kept classes (the student's own distribution is still
normalised over all ``C`` classes). With ``k == C`` nothing is dropped and the
loss equals the dense one.

Example
-------
>>> import torch
>>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
>>> t = TopK.from_logits(logits, k=2)
>>> t.indices.tolist()
[[0, 1]]
>>> round(float(t.log_probs.exp().sum()), 3)  # mass kept of the whole
0.881
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TopK:
    """The ``k`` most probable classes of a distribution at each position.

    Args:
        log_probs: ``(..., k)`` log-probabilities at temperature 1, sorted
            descending along the last dim.
        indices: ``(..., k)`` class indices (any integer dtype).
    """

    log_probs: Tensor
    indices: Tensor

    def __post_init__(self) -> None:
        if self.log_probs.shape != self.indices.shape:
            raise ValueError(
                f"TopK: log_probs {tuple(self.log_probs.shape)} and indices "
                f"{tuple(self.indices.shape)} must have the same shape"
            )

    @property
    def k(self) -> int:
        return self.log_probs.shape[-1]

    @classmethod
    def from_logits(cls, logits: Tensor, k: int) -> TopK:
        """Keep the top ``k`` of ``log_softmax(logits)`` (logits or log-probs)."""
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        log_probs = torch.log_softmax(x, dim=-1)
        k = min(k, log_probs.shape[-1])
        values, indices = log_probs.topk(k, dim=-1)
        return cls(values, indices)

    def softened(self, temperature: float) -> Tensor:
        """Log-probabilities at ``temperature``, renormalised over the kept classes."""
        lp = self.log_probs
        lp = lp if lp.dtype in (torch.float32, torch.float64) else lp.float()
        return torch.log_softmax(lp / temperature, dim=-1)

    def to(self, device: torch.device | str) -> TopK:
        return TopK(self.log_probs.to(device), self.indices.to(device))

    def to_dense(self, num_classes: int, fill: float = float("-inf")) -> Tensor:
        """Scatter back to ``(..., num_classes)``; dropped classes get ``fill``."""
        out = self.log_probs.new_full((*self.log_probs.shape[:-1], num_classes), fill)
        return out.scatter(-1, self.indices.long(), self.log_probs)
