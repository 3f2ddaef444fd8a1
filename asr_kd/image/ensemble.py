"""The MNIST recipe's ``ensemble`` experiment: the teachers of several seeds as one teacher.

The members are the ``teacher`` models that the main table trained for each seed of
``ensemble.seeds`` (same output folder and settings). Combined with the core's
:func:`~asr_kd.distill.combine`, ``geometric`` (mean log-probabilities) is the members'
mean logits up to a constant, so tempering it later gives ``softmax(mean_i z_i / T)``:

>>> import torch
>>> from asr_kd.distill import combine
>>> z1, z2 = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 1.0]])
>>> torch.allclose(combine([z1, z2], method="geometric"), ((z1 + z2) / 2).log_softmax(-1))
True
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..distill import combine
from .config import RecipeError, machine
from .train import logits_of


def ensemble_log_probs(recipe: Any, x: torch.Tensor) -> torch.Tensor:
    """The ``ensemble.seeds`` teachers' combined log-probabilities on ``x`` (``recipe``: a :class:`.recipe.Recipe`)."""
    members = []
    for s in recipe.cfg["ensemble"]["seeds"]:
        folder = recipe.out_dir / f"seed{s}"
        loaded = recipe._load("teacher", dict(recipe.cfg["teacher"]), folder)
        if loaded is None:
            raise RecipeError(
                f"{folder / 'teacher.pt'}: no teacher for seed {s}, a member of ensemble.seeds; train it "
                f"first (--seed {s} --experiments teacher, same --out-dir and settings) or change ensemble.seeds"
            )
        members.append(logits_of(loaded[0], x))
    return combine(members, method=recipe.cfg["ensemble"]["method"])


def run_ensemble(recipe: Any) -> None:
    """Score the combined teacher once on validation and test, then distil a student from it."""
    cfg, d = recipe.cfg, recipe.data
    seeds = [int(s) for s in cfg["ensemble"]["seeds"]]
    method = cfg["ensemble"]["method"]
    t = cfg["distill"]["temperature"]
    w = cfg["student"]["sizes"][1]
    k = len(seeds)
    val_errors = int((ensemble_log_probs(recipe, d.val_x).argmax(-1) != d.val_y).sum())
    test_errors = int((ensemble_log_probs(recipe, d.test_x).argmax(-1) != d.test_y).sum())
    recipe.log(f"teacher-ens{k}: {method} mean of the teachers of seeds {seeds}: test errors {test_errors}")
    recipe.record(
        {
            "seed": recipe.seed,
            "name": f"teacher-ens{k}",
            "experiment": "ensemble",
            "members": seeds,
            "sizes": cfg["teacher"]["sizes"],
            "formula": f"{method} mean of the teachers of seeds {seeds}",
            "temperature": None,
            "epochs": None,
            "best_epoch": None,
            "train_seconds": 0.0,
            "val_errors": val_errors,
            "val_n": len(d.val_y),
            "test_errors": test_errors,
            "test_n": len(d.test_y),
            "command": recipe.command,
            "machine": machine(str(recipe.device)),
            "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
    )
    model, rec = recipe.student(f"student{w}-soft-T{t:g}-ens{k}", "student", t, 0.0, ensemble=seeds)
    recipe.score(model, rec, "ensemble")
