"""The paper's transfer-set experiments with a bias adjustment: digit 3 omitted, only 7s and 8s.

Each trains a student on a transfer set missing classes, then moves the biases of those classes by
the shift that is best on the validation split (the paper tuned it on the test set).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from ..models.mlp import MLP
from .mnist import Mnist
from .train import count_errors, logits_of, tune_bias


class Recipe(Protocol):
    """What these experiments use of :class:`asr_kd.image.recipe.Recipe`."""

    cfg: Mapping[str, Any]
    data: Mnist
    device: torch.device

    def log(self, msg: str) -> None: ...

    def student(
        self, name: str, width_key: str, temperature: float | None, hard_weight: float, keep: torch.Tensor | None
    ) -> tuple[MLP, dict[str, Any]]: ...

    def score(self, model: MLP, record: dict[str, Any], experiment: str, **extra: Any) -> dict[str, Any]: ...


def _grid(recipe: Recipe, low: float, high: float) -> list[float]:
    step = recipe.cfg["bias"]["step"]
    n = int(round((high - low) / step))
    return [round(low + i * step, 6) for i in range(n + 1)]


def run_omit3(recipe: Recipe) -> None:
    t = recipe.cfg["distill"]["temperature"]
    w = recipe.cfg["student"]["sizes"][1]
    keep = recipe.data.train_y != 3
    model, rec = recipe.student(f"student{w}-omit3-T{t:g}", "student", t, recipe.cfg["transfer"]["hard_weight"], keep)
    shift, tuning = tune_bias(
        logits_of(model, recipe.data.val_x), recipe.data.val_y, [3], _grid(recipe, 0.0, recipe.cfg["bias"]["max_raise"])
    )
    bias = torch.zeros(10, device=recipe.device)
    bias[3] = shift
    threes = recipe.data.test_y == 3
    tx, ty = recipe.data.test_x, recipe.data.test_y
    extra = {
        "test_3s": int(threes.sum()),
        "test_errors_on_3s": count_errors(model, tx[threes], ty[threes]),
        "bias_shift": shift,
        "bias_tuning": tuning,
        "test_errors_adjusted": count_errors(model, tx, ty, bias),
        "test_errors_on_3s_adjusted": count_errors(model, tx[threes], ty[threes], bias),
    }
    recipe.log(f"omit3: class-3 bias +{shift:g} (val-tuned): {extra}")
    recipe.score(model, rec, "omit3", **extra)


def run_only78(recipe: Recipe) -> None:
    t = recipe.cfg["distill"]["temperature"]
    w = recipe.cfg["student"]["sizes"][1]
    keep = (recipe.data.train_y == 7) | (recipe.data.train_y == 8)
    model, rec = recipe.student(f"student{w}-only78-T{t:g}", "student", t, recipe.cfg["transfer"]["hard_weight"], keep)
    shift, tuning = tune_bias(
        logits_of(model, recipe.data.val_x),
        recipe.data.val_y,
        [7, 8],
        _grid(recipe, -recipe.cfg["bias"]["max_lower"], 0.0),
    )
    bias = torch.zeros(10, device=recipe.device)
    bias[[7, 8]] = shift
    extra = {
        "bias_shift": shift,
        "bias_tuning": tuning,
        "test_errors_adjusted": count_errors(model, recipe.data.test_x, recipe.data.test_y, bias),
    }
    recipe.log(f"only78: 7/8 bias {shift:+g} (val-tuned): {extra}")
    recipe.score(model, rec, "only78", **extra)
