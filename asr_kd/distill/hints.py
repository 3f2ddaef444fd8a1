"""Intermediate-layer ("hint") distillation through forward hooks.

The paper distils the last layer only. :class:`HintLoss` also matches chosen
intermediate layers: student and teacher modules are picked by name
(``dict(model.named_modules())``), their outputs captured by forward hooks, so
neither model's code changes. When widths differ, a learned linear projection
maps the student's features to the teacher's width (train it with the
student: its parameters are this module's). Features are taken along the last
dim; a module returning a tuple (an LSTM) contributes its first element, and a
packed sequence is unpacked to ``(batch, frames, features)`` (zeros past each end).

Example
-------
>>> import torch
>>> from torch import nn
>>> teacher = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
>>> student = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> hints = HintLoss(student, teacher, [("1", "1")], widths=[(8, 16)])
>>> x = torch.randn(5, 4)
>>> with torch.no_grad():
...     _ = teacher(x)
>>> _ = student(x)
>>> loss = hints()          # mean over pairs of the per-position loss
>>> loss.shape, len(list(hints.parameters()))  # one projection: weight + bias
(torch.Size([]), 2)
>>> hints.remove()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from .losses import masked_mean

LOSSES = ("mse", "cosine")


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        names = [n for n in modules if n]
        raise KeyError(f"{role} has no module named {name!r}; its modules are: {names}")
    return modules[name]


def _first_tensor(output, module: nn.Module) -> Tensor:
    while isinstance(output, (tuple, list)) and not isinstance(output, nn.utils.rnn.PackedSequence):
        output = output[0]
    if isinstance(output, nn.utils.rnn.PackedSequence):  # an RNN fed packed sequences
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=getattr(module, "batch_first", False))
    if not isinstance(output, Tensor):
        raise TypeError(f"hooked module returned {type(output).__name__}, expected a tensor")
    return output


class HintLoss(nn.Module):
    """Loss between hooked student and teacher features.

    Args:
        student, teacher: the two models (left untouched but for hooks).
        pairs: ``(student_module_name, teacher_module_name)`` pairs.
        widths: per pair ``(student_width, teacher_width)``; a projection is
            learned where they differ. Omit to assume equal widths.
        loss: ``"mse"`` (mean squared error per position) or ``"cosine"``
            (``1 - cosine similarity`` per position).
        strides: per pair, how many teacher positions (along the second-to-last dim) one
            student position stands for (a student at a lower rate, e.g. one that reads 3
            frames per step): the projection maps a student position to ``stride`` teacher
            features, unfolded to the teacher's positions (the last, partial group trimmed).
            Omit for 1 everywhere.

    Call it after both forward passes; pass ``mask`` (leading dims of the
    features, e.g. ``(batch, frames)``) to leave padded frames out. Captured
    features are cleared after each call.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        pairs: Sequence[tuple[str, str]],
        widths: Sequence[tuple[int, int]] | None = None,
        loss: str = "mse",
        strides: Sequence[int] | None = None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not pairs:
            raise ValueError("HintLoss needs at least one (student, teacher) module pair")
        if widths is not None and len(widths) != len(pairs):
            raise ValueError(f"got {len(widths)} widths for {len(pairs)} pairs")
        if strides is not None and (len(strides) != len(pairs) or min(strides) < 1):
            raise ValueError(f"give one stride >= 1 per pair, got {list(strides)} for {len(pairs)} pairs")
        self.pairs = list(pairs)
        self.loss = loss
        self.strides = list(strides or [1] * len(pairs))
        self.projections = nn.ModuleList()
        for (s_width, t_width), stride in zip(widths or [(0, 0)] * len(pairs), self.strides, strict=True):
            if stride > 1 and not s_width:
                raise ValueError("a pair with a stride > 1 needs its widths (its projection is learned)")
            proj = nn.Linear(s_width, stride * t_width) if s_width != stride * t_width else nn.Identity()
            self.projections.append(proj)
        self._student_feats: dict[int, Tensor] = {}
        self._teacher_feats: dict[int, Tensor] = {}
        self._handles = []
        for i, (s_name, t_name) in enumerate(self.pairs):
            s_mod = _module(student, s_name, "student")
            t_mod = _module(teacher, t_name, "teacher")
            self._handles.append(s_mod.register_forward_hook(self._capture(self._student_feats, i, False)))
            self._handles.append(t_mod.register_forward_hook(self._capture(self._teacher_feats, i, True)))

    @staticmethod
    def _capture(store: dict[int, Tensor], i: int, detach: bool):
        def hook(module, inputs, output):
            out = _first_tensor(output, module)
            store[i] = out.detach() if detach else out

        return hook

    def pair_loss(self, i: int, mask: Tensor | None = None) -> Tensor:
        if i not in self._student_feats or i not in self._teacher_feats:
            raise RuntimeError(
                f"no features captured for pair {self.pairs[i]}: run both models' forward before the loss"
            )
        s = self.projections[i](self._student_feats[i].float())
        t = self._teacher_feats[i].float()
        if self.strides[i] > 1:  # (..., n, stride * D) -> (..., n * stride, D), cut to the teacher's
            s = s.reshape(*s.shape[:-2], -1, t.shape[-1])[..., : t.shape[-2], :]
        if s.shape != t.shape:
            raise ValueError(
                f"pair {self.pairs[i]}: student features {tuple(s.shape)} (after projection) and teacher "
                f"features {tuple(t.shape)} differ; give widths=(student, teacher) for this pair"
            )
        if self.loss == "mse":
            per_position = (s - t).pow(2).mean(-1)
        else:
            per_position = 1 - torch.cosine_similarity(s, t, dim=-1)
        return masked_mean(per_position, mask)

    def forward(self, mask: Tensor | None = None) -> Tensor:
        """Mean over the pairs of each pair's loss; clears the captured features."""
        total = cast(Tensor, sum(self.pair_loss(i, mask) for i in range(len(self.pairs))) / len(self.pairs))
        self._student_feats.clear()
        self._teacher_feats.clear()
        return total

    def remove(self) -> None:
        """Remove the hooks from both models."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
