"""Online distillation: peers and a student trained together, in one pass.

The paper's first limit: "we have to do the training twice, once for the teacher and once for
the student". Here the peers (the would-be teachers) and the student see the same batch; each
step the peers' current outputs, combined like an ensemble (:func:`combine`) and detached, are
the student's soft targets (Anil et al. 2018, "Large scale distributed neural network training
through online distillation"). Optionally each peer also learns from the combination of the
*other* peers (deep mutual learning, Zhang et al. 2018) with ``mutual_weight``. Before
``burn_in`` steps only the hard terms train (early peers are no better than noise).

The caller computes every hard term (cross-entropy for images, CTC for speech) and passes
logits of matching shapes; positions are masked like the rest of the core.

Example
-------
>>> import torch
>>> import torch.nn.functional as F
>>> from asr_kd.distill import DistillationLoss
>>> online = OnlineDistillation(DistillationLoss(temperature=2.0, hard_weight=0.5, soft_weight=1.0),
...                             mutual_weight=0.5, burn_in=100)
>>> print(str(online).split("; ")[0])
peers: hard + 0.5 * T^2 KL(others_T || peer_T)
>>> y = torch.tensor([0, 1, 2, 1])
>>> peers = [torch.randn(4, 3, requires_grad=True) for _ in range(2)]
>>> student = torch.randn(4, 3, requires_grad=True)
>>> hard = lambda z: F.cross_entropy(z, y)
>>> sorted(online(peers, student, [hard(p) for p in peers], hard(student), step=0).parts)
['peer0.hard', 'peer1.hard', 'student.hard']
>>> sorted(online(peers, student, [hard(p) for p in peers], hard(student), step=100).parts)
['peer0.hard', 'peer0.mutual', 'peer1.hard', 'peer1.mutual', 'student.hard', 'student.soft']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from torch import Tensor

from .ensemble import combine
from .objective import DistillationLoss, LossOutput


class OnlineDistillation:
    """The loss of one step of peers + student trained together.

    Args:
        kd: the student's loss (hard term, soft term at its temperature), as for a
            student distilled from a cache.
        method, weights: how the peers' outputs combine (:func:`combine`).
        mutual_weight: weight of each peer's soft term towards the other peers (0: the peers
            train on their hard term alone; the student-only mode).
        burn_in: steps before any soft or mutual term starts.
    """

    def __init__(
        self,
        kd: DistillationLoss,
        method: str = "arithmetic",
        weights: Sequence[float] | None = None,
        mutual_weight: float = 0.0,
        burn_in: int = 0,
    ) -> None:
        if mutual_weight < 0 or burn_in < 0:
            raise ValueError(f"mutual_weight and burn_in must be >= 0, got {mutual_weight} and {burn_in}")
        self.kd, self.method, self.weights = kd, method, weights
        self.mutual_weight, self.burn_in = float(mutual_weight), int(burn_in)

    def __str__(self) -> str:
        mutual = f" + {self.mutual_weight:g} * T^2 KL(others_T || peer_T)" if self.mutual_weight else ""
        start = f" (from step {self.burn_in})" if self.burn_in else ""
        return f"peers: hard{mutual}; student: {self.kd}{start}"

    def targets(self, peer_logits: Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
        """The peers' combined log-probabilities, detached: the student's soft targets."""
        return combine([p.detach() for p in peer_logits], self.method, self.weights, mask)

    def __call__(
        self,
        peer_logits: Sequence[Tensor],
        student_logits: Tensor,
        peer_hard: Sequence[Tensor],
        student_hard: Tensor,
        mask: Tensor | None = None,
        step: int = 0,
    ) -> LossOutput:
        """The sum of every peer's loss and the student's, and each term's value.

        Args:
            peer_logits: one ``(..., C)`` tensor per peer (with grad).
            student_logits: ``(..., C)``, the same shape.
            peer_hard, student_hard: each model's hard-label loss on this batch.
            mask: ``(...)`` real positions (padded frames left out of the soft terms).
            step: the training step (the burn-in counts these).
        """
        if len(peer_logits) != len(peer_hard) or not peer_logits:
            raise ValueError(f"{len(peer_logits)} peers' logits for {len(peer_hard)} hard terms")
        terms: dict[str, Tensor] = {f"peer{i}.hard": h for i, h in enumerate(peer_hard)}
        total = cast(Tensor, sum(peer_hard))
        if step < self.burn_in:
            terms["student.hard"] = student_hard
            return _output(total + student_hard, terms)
        soft = self.kd.soft_term(student_logits, self.targets(peer_logits, mask), mask)
        terms["student.hard"], terms["student.soft"] = student_hard, soft
        total = total + self.kd.weighted({"hard": student_hard, "soft": soft}).total
        if self.mutual_weight and len(peer_logits) > 1:
            for i, logits in enumerate(peer_logits):
                others = self.targets([p for j, p in enumerate(peer_logits) if j != i], mask)
                mutual = self.kd.soft_term(logits, others, mask)
                terms[f"peer{i}.mutual"] = mutual
                total = total + self.mutual_weight * mutual
        return _output(total, terms)


def _output(total: Tensor, terms: dict[str, Tensor]) -> LossOutput:
    return LossOutput(total, {name: float(value.detach()) for name, value in terms.items()})
