"""Intermediate-layer distillation for an ASR student (``students.kd.hint_weight > 0``).

The paper distils the last layer only. Here a distilled student may also match a layer of one
ensemble member (FitNets; Inter-KD, Yoon et al. 2022): the core's :class:`HintLoss` between the
student's and the teacher's module of the same name (``encoder`` by default), through a learned
projection; a student that reads several frames per encoder step (``model.stack``) predicts the
teacher's features of each of those frames. The teacher runs frozen on the student's batch
(the same augmented features), so nothing is cached.

Example
-------
>>> import torch
>>> from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
>>> teacher = CTCAcousticModel(AcousticConfig(num_classes=5, n_mels=8, hidden=8, conv_channels=2, packed=False))
>>> student = CTCAcousticModel(AcousticConfig(num_classes=5, n_mels=8, hidden=4, conv_channels=2, packed=False,
...                                           stack=2))
>>> hints = Hints(teacher, layer="encoder", weight=1.0).build(student)
>>> hints.strides, hints.projections[0]
([2], Linear(in_features=8, out_features=32, bias=True))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from asr_kd.distill.hints import HintLoss
from asr_kd.models.acoustic import CTCAcousticModel


@dataclass
class Hints:
    """A frozen teacher model, the layer (module name) both models are matched at, the term's
    weight and its loss (``mse`` or ``cosine``)."""

    teacher: nn.Module
    layer: str = "encoder"
    weight: float = 1.0
    loss: str = "mse"

    def build(self, student: CTCAcousticModel) -> HintLoss:
        """The :class:`HintLoss` for ``student``: widths and rates from one dry forward pass."""
        self.teacher.eval().requires_grad_(False)
        teacher_cfg = getattr(self.teacher, "cfg", student.cfg)
        if student.cfg.delay or teacher_cfg.delay:
            raise ValueError(
                "students.kd.hint_weight with model.delay: a delayed model's encoder steps do not line up "
                "with the teacher's frames; train the delayed (streaming) student without hints"
            )
        if student.cfg.stack % teacher_cfg.stack:
            raise ValueError(f"hints: a student stacking {student.cfg.stack} frames, a teacher {teacher_cfg.stack}")
        stride = student.cfg.stack // teacher_cfg.stack
        n_mels = student.cfg.n_mels
        s_out, t_out = _layer_output(student, self.layer, n_mels), _layer_output(self.teacher, self.layer, n_mels)
        if -(-t_out.shape[-2] // stride) != s_out.shape[-2]:
            raise ValueError(
                f"hint layer {self.layer!r}: the student gives {s_out.shape[-2]} positions for the teacher's "
                f"{t_out.shape[-2]}, not one per {stride}; choose a layer both run at their encoder's rate"
            )
        return HintLoss(
            student,
            self.teacher,
            [(self.layer, self.layer)],
            widths=[(s_out.shape[-1], t_out.shape[-1])],
            loss=self.loss,
            strides=[stride],
        )


@torch.no_grad()
def _layer_output(model: nn.Module, layer: str, n_mels: int) -> Tensor:
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(
            f"students.kd.hint_layer: no module {layer!r}; the model's modules: {[n for n in modules if n]}"
        )
    seen: list[Tensor] = []
    handle = modules[layer].register_forward_hook(
        lambda m, i, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    was_training = model.training
    try:
        model.eval()(torch.zeros(1, 240, n_mels), torch.tensor([240]))
    finally:
        handle.remove()
        model.train(was_training)
    return seen[0]
