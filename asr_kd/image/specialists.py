"""The MNIST recipe's specialist ensemble (the paper's Section 5), distilled back into one net.

Experiment ``specialists``, on the core's :mod:`asr_kd.distill.specialists`:

1. The generalist is the recipe's teacher.
2. Class subsets: K-means on the correlation columns of the generalist's probabilities on
   the validation images (their labels are not used), once for each K of
   ``specialists.clusters``; the subsets of all runs together, so a class is covered by up to
   ``len(clusters)`` specialists (the rows of the paper's Table 4).
3. Each specialist starts from the generalist's weights (its subset's output units copied, one
   dustbin unit for every other class) and is fine-tuned with the teacher's regularisation on a
   sample half from its subset and half at random; then its dustbin logit is raised by the
   oversampling's log odds ratio (:func:`~asr_kd.distill.specialists.dustbin_shift`).
   ``specialists.init: scratch`` (not the paper's) trains each from random weights instead, on
   the same sample: specialists that do not inherit the generalist's errors.
4. Inference: the generalist's top-``top_n`` classes select the active specialists, and the
   full distribution minimising ``KL(p_g, q) + sum_m KL(p_m, q_m)`` is found by gradient steps,
   in batches of cases. Reported: test errors of the generalist alone and combined, the
   paper's Table 4 (gain by how many active specialists cover the true class), and the time per
   test case.
5. Students (the generalist's size and the ``student`` size, both with the student's
   settings) distilled from the combination at each T of ``specialists.temperatures`` (T
   picked on validation), beside the same students distilled from the generalist alone.

Example
-------
>>> from asr_kd.models.mlp import MLP
>>> g = MLP([784, 16, 10])
>>> init = specialist_init(g, [3, 5, 8])
>>> tuple(init["layers.1.weight"].shape)
(4, 16)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..distill.specialists import (
    active_specialists,
    cluster_classes,
    collapse_to_specialist,
    combine_specialists,
    raise_dustbin,
    specialist_batch_indices,
    specialist_labels,
    specialist_state,
    table4,
)
from ..models.mlp import MLP
from .config import RecipeError, machine
from .train import logits_of

INITS = ("generalist", "scratch")  #: a specialist's starting weights (``specialists.init``)


def specialist_init(generalist: MLP, subset: Sequence[int]) -> dict[str, Tensor]:
    """A specialist's starting weights: the generalist's, with the output layer cut to the
    subset's units plus a dustbin unit.

    The dustbin unit gets the mean weights of the other classes' units and their mean bias plus
    the log of their number: the log-sum-exp of equal logits, so at the start the dustbin holds
    about the mass the generalist gives the classes outside the subset.
    """
    last = f"layers.{len(generalist.layers) - 1}"
    try:
        return specialist_state(generalist.state_dict(), last, subset)
    except ValueError as err:
        raise RecipeError(f"specialist subset {list(subset)}: {err}") from None


def class_subsets(probs: Tensor, clusters: Sequence[int], seed: int = 0) -> list[list[int]]:
    """The subsets of K-means over the classes for each K of ``clusters``, without repeats and
    without subsets of every class (no dustbin) or of one class (nothing to tell apart)."""
    out: list[list[int]] = []
    for k in clusters:
        for subset in cluster_classes(probs, int(k), seed=seed):
            if 1 < len(subset) < probs.shape[1] and subset not in out:
                out.append(subset)
    if not out:
        raise RecipeError(f"specialists.clusters={list(clusters)} gave no subset of 2 or more classes; use K >= 2")
    return out


@dataclass
class Specialist:
    """A trained specialist: its classes, its net (``|subset| + 1`` outputs) and dustbin shift."""

    subset: list[int]
    model: MLP
    shift: float

    def log_probs(self, x: Tensor) -> Tensor:
        """Log-probabilities over the subset and the dustbin (shift applied)."""
        return torch.log_softmax(raise_dustbin(logits_of(self.model, x), self.shift), -1)


def combined(
    generalist: MLP, specialists: Sequence[Specialist], x: Tensor, cfg: Mapping[str, Any], batch: int = 5000
) -> tuple[Tensor, Tensor]:
    """The combination's log-probabilities ``(N, C)`` on ``x`` and which specialists were active ``(N, M)``."""
    subsets = [s.subset for s in specialists]
    out, act = [], []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        p_g = torch.log_softmax(logits_of(generalist, xb), -1)
        active = active_specialists(p_g, subsets, int(cfg["top_n"]))
        p_m = [s.log_probs(xb) for s in specialists]
        with torch.enable_grad():
            q = combine_specialists(p_g, p_m, subsets, active, int(cfg["combine_steps"]), float(cfg["combine_lr"]))
        out.append(q)
        act.append(active)
    return torch.cat(out), torch.cat(act)


def train_specialists(recipe: Any, generalist: MLP, subsets: Sequence[Sequence[int]]) -> list[Specialist]:
    """Fine-tune (or load) one specialist per subset; see the module's step 3."""
    sc, d = recipe.cfg["specialists"], recipe.data
    init = str(sc.get("init", "generalist"))
    if init not in INITS:
        raise RecipeError(f"specialists.init must be one of {list(INITS)}, got {init!r}")
    labels = d.train_y.cpu()
    out = []
    for subset in subsets:
        subset = list(subset)
        name = "specialist-c" + "".join(map(str, subset))
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + sum(1 << c for c in subset))
        idx, shift = specialist_batch_indices(labels, subset, len(labels), generator=g)
        idx = idx.to(recipe.device)
        spec = dict(recipe.cfg["teacher"])
        spec.update(
            sizes=[*spec["sizes"][:-1], len(subset) + 1],
            epochs=int(sc["epochs"]),
            lr=float(sc["lr"]),
            subset=subset,
            init=init,
            sample="half from the subset",
            dustbin_shift=round(shift, 6),
        )
        y = specialist_labels(d.train_y[idx], subset, 10)
        val = (d.val_x, specialist_labels(d.val_y, subset, 10))
        weights = specialist_init(generalist, subset) if init == "generalist" else None
        model, _ = recipe.fit(name, spec, d.train_x[idx], y, init=weights, val=val)
        recipe.log(f"{name}: {len(subset)} classes + dustbin ({init} weights), dustbin logit +{shift:.3f}")
        out.append(Specialist(subset, model.eval(), shift))
    return out


def own_space_errors(gen_log_probs: Tensor, specialists: Sequence[Specialist], x: Tensor, y: Tensor) -> list[dict]:
    """Per specialist, test errors over its own classes (its subset and the dustbin): the
    generalist's distribution collapsed to them against the specialist's. A combination can only
    gain where a specialist beats the generalist at its own task."""
    out = []
    for s in specialists:
        target = specialist_labels(y, s.subset, gen_log_probs.shape[1])
        inside = target < len(s.subset)
        gen = collapse_to_specialist(gen_log_probs, s.subset).argmax(-1) != target
        own = s.log_probs(x).argmax(-1) != target
        out.append(
            {
                "subset": s.subset,
                "cases_in_subset": int(inside.sum()),
                "generalist_errors": int(gen.sum()),
                "specialist_errors": int(own.sum()),
                "generalist_errors_in_subset": int(gen[inside].sum()),
                "specialist_errors_in_subset": int(own[inside].sum()),
            }
        )
    return out


def _errors(log_probs: Tensor, y: Tensor) -> int:
    return int((log_probs.argmax(-1) != y).sum())


def run_specialists(recipe: Any) -> None:
    """The experiment ``specialists`` of :class:`asr_kd.image.recipe.Recipe` (module docstring)."""
    sc, d = recipe.cfg["specialists"], recipe.data
    generalist = recipe.teacher()
    subsets = class_subsets(torch.softmax(logits_of(generalist, d.val_x), -1), sc["clusters"], recipe.seed)
    recipe.log(f"specialists: class subsets {subsets} (K-means, K in {list(sc['clusters'])})")
    specialists = train_specialists(recipe, generalist, subsets)

    began = time.perf_counter()
    gen_test = torch.log_softmax(logits_of(generalist, d.test_x), -1)
    gen_seconds = time.perf_counter() - began
    began = time.perf_counter()
    comb_test, active = combined(generalist, specialists, d.test_x, sc)
    comb_seconds = time.perf_counter() - began
    comb_val, _ = combined(generalist, specialists, d.val_x, sc)
    n = len(d.test_y)
    rows = table4(gen_test.argmax(-1), comb_test.argmax(-1), active, subsets, d.test_y)
    summary = {
        "seed": recipe.seed,
        "name": "generalist+specialists",
        "experiment": "specialists",
        "sizes": recipe.cfg["teacher"]["sizes"],
        "formula": f"generalist + {len(subsets)} specialists {subsets} ({sc.get('init', 'generalist')} weights), "
        f"top-{sc['top_n']} active, "
        f"KL-minimising combination ({sc['combine_steps']} Adam steps)",
        "subsets": subsets,
        "temperature": None,
        "epochs": int(sc["epochs"]),
        "best_epoch": None,
        "train_seconds": 0.0,
        "val_errors": _errors(comb_val, d.val_y),
        "val_n": len(d.val_y),
        "test_errors": _errors(comb_test, d.test_y),
        "test_n": n,
        "generalist_test_errors": _errors(gen_test, d.test_y),
        "active_per_case": float(active.sum(1).float().mean()),
        "ms_per_case": {"generalist": 1000 * gen_seconds / n, "combination": 1000 * comb_seconds / n},
        "table4": rows,
        "own_space": own_space_errors(gen_test, specialists, d.test_x, d.test_y),
        "command": recipe.command,
    }
    summary.update(machine=machine(str(recipe.device)), finished_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    recipe.log(
        f"generalist {summary['generalist_test_errors']} -> with specialists {summary['test_errors']} test errors; "
        f"{summary['ms_per_case']['combination']:.2f} ms per case"
    )
    recipe.record(summary)
    distil_combination(recipe, generalist, specialists)


def distil_combination(recipe: Any, generalist: MLP, specialists: Sequence[Specialist]) -> None:
    """Students distilled from the combination, and from the generalist alone, at each T."""
    sc, d, cfg = recipe.cfg["specialists"], recipe.data, recipe.cfg
    comb_train, _ = combined(generalist, specialists, d.train_x, sc)
    gen_train = logits_of(generalist, d.train_x)
    subsets = [s.subset for s in specialists]
    for key in sc["students"]:
        sizes = list(cfg[key]["sizes"])
        w = sizes[1]
        for t in sc["temperatures"]:
            base = dict(cfg["student"])
            base.update(sizes=sizes, temperature=float(t), hard_weight=0.0, soft_weight=cfg["distill"]["soft_weight"])
            for name, spec, logits in (
                (f"student{w}-soft-T{t:g}-gen", {**base, "teacher_alone": True}, gen_train),
                (f"student{w}-soft-T{t:g}-spec", {**base, "teacher_specialists": subsets}, comb_train),
            ):
                model, rec = recipe.fit(name, spec, d.train_x, d.train_y, logits)
                recipe.score(
                    model, rec, "specialists", source="specialists" if name.endswith("-spec") else "generalist"
                )
