"""The total training loss as named, weighted terms that print as a formula.

A :class:`WeightedLoss` holds a weight per term name; the caller computes each
term (hard-label loss, soft term, hint term ...) and the object sums them.
:class:`DistillationLoss` is Hinton's recipe built on it: a hard term the
caller supplies (cross-entropy for images, CTC for speech) plus a soft term,
either the ``T^2``-scaled KL or logit matching.

Example
-------
>>> import torch
>>> kd = DistillationLoss(temperature=2.0, hard_weight=0.5, soft_weight=1.0)
>>> print(kd)
loss = 0.5 * hard + 1 * soft[T^2 * KL(teacher_T || student_T), T=2]
>>> z = torch.zeros(4, 10)
>>> out = kd(z, teacher=z, hard=torch.tensor(2.0))
>>> float(out.total), out.parts
(1.0, {'hard': 2.0, 'soft': 0.0})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from torch import Tensor

from .losses import logit_matching_loss, soft_target_loss
from .targets import TopK


@dataclass
class LossOutput:
    """The total loss (with grad) and each term's value as a float, for logging."""

    total: Tensor
    parts: dict[str, float] = field(default_factory=dict)


class WeightedLoss:
    """A sum of named terms, each with a weight; terms with weight 0 are skipped.

    Args:
        weights: term name -> weight.
        labels: optional term name -> description shown by :meth:`formula`.

    Example
    -------
    >>> import torch
    >>> w = WeightedLoss({"hard": 0.5, "hint": 2.0})
    >>> w.formula()
    'loss = 0.5 * hard + 2 * hint'
    >>> float(w({"hard": torch.tensor(1.0), "hint": torch.tensor(0.25)}).total)
    1.0
    """

    def __init__(self, weights: Mapping[str, float], labels: Mapping[str, str] | None = None):
        for name, weight in weights.items():
            if weight < 0:
                raise ValueError(f"loss term {name!r} has negative weight {weight}")
        if not any(w > 0 for w in weights.values()):
            raise ValueError(f"at least one loss weight must be > 0, got {dict(weights)}")
        self.weights = dict(weights)
        self.labels = dict(labels or {})

    @property
    def active(self) -> list[str]:
        """Names of the terms with a non-zero weight, in order."""
        return [n for n, w in self.weights.items() if w > 0]

    def formula(self) -> str:
        terms = []
        for name in self.active:
            label = self.labels.get(name)
            terms.append(f"{self.weights[name]:g} * {name}" + (f"[{label}]" if label else ""))
        return "loss = " + " + ".join(terms)

    def __str__(self) -> str:
        return self.formula()

    def __call__(self, parts: Mapping[str, Tensor]) -> LossOutput:
        missing = [n for n in self.active if n not in parts]
        if missing:
            raise KeyError(f"loss terms {missing} were not computed; got {sorted(parts)}")
        total = cast(Tensor, sum(self.weights[n] * parts[n] for n in self.active))  # active is never empty
        return LossOutput(total, {n: float(parts[n].detach()) for n in self.active})


class DistillationLoss:
    """``hard_weight * hard + soft_weight * soft`` (+ any extra weighted terms).

    Args:
        temperature: ``T`` of the soft term (ignored by logit matching).
        hard_weight: weight of the hard-label loss the caller computes.
        soft_weight: weight of the soft term.
        soft: ``"kl"`` (``T^2 * KL``, the paper's) or ``"logits"`` (logit matching).
        extra_weights: weights of further terms passed to :meth:`__call__`
            (e.g. ``{"hint": 1.0}`` for intermediate-layer distillation).
    """

    SOFT_KINDS = ("kl", "logits")

    def __init__(
        self,
        temperature: float = 2.0,
        hard_weight: float = 0.5,
        soft_weight: float = 1.0,
        soft: str = "kl",
        extra_weights: Mapping[str, float] | None = None,
    ):
        if soft not in self.SOFT_KINDS:
            raise ValueError(f"soft must be one of {self.SOFT_KINDS}, got {soft!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.soft = soft
        label = (
            f"T^2 * KL(teacher_T || student_T), T={self.temperature:g}" if soft == "kl" else "MSE of zero-meaned logits"
        )
        weights = {"hard": hard_weight, "soft": soft_weight, **(extra_weights or {})}
        self.weighted = WeightedLoss(weights, {"soft": label})

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DistillationLoss:
        """Build from a config mapping with keys of :meth:`__init__`; unknown keys are refused."""
        allowed = {"temperature", "hard_weight", "soft_weight", "soft", "extra_weights"}
        unknown = set(cfg) - allowed
        if unknown:
            raise ValueError(f"unknown distillation option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**cfg)

    def __str__(self) -> str:
        return self.weighted.formula()

    def soft_term(
        self, student_logits: Tensor, teacher: Tensor | TopK, mask: Tensor | None = None, weights: Tensor | None = None
    ) -> Tensor:
        """The soft term alone: ``T^2``-scaled KL or logit matching, a mean over the real positions."""
        if self.soft == "kl":
            return soft_target_loss(student_logits, teacher, self.temperature, mask, weights)
        return logit_matching_loss(student_logits, teacher, mask, weights)

    def __call__(
        self,
        student_logits: Tensor,
        teacher: Tensor | TopK,
        hard: Tensor | None = None,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
        **extra: Tensor,
    ) -> LossOutput:
        """Args: student ``(..., C)`` logits, teacher dense or top-k, the hard loss
        value (needed when its weight is > 0), the position mask, optional
        per-position weights of the soft term, extra terms."""
        parts: dict[str, Tensor] = dict(extra)
        if self.weighted.weights["soft"] > 0:
            parts["soft"] = self.soft_term(student_logits, teacher, mask, weights)
        if self.weighted.weights["hard"] > 0:
            if hard is None:
                raise ValueError("hard_weight > 0 but no hard-label loss was given")
            parts["hard"] = hard
        return self.weighted(parts)
