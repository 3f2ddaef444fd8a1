"""The MNIST recipe's online distillation: the teacher and a student trained together, in one pass.

Every step the teacher trains on its batch as in the main table (jittered inputs, dropout,
max-norm) while the student learns from the teacher's current predictions on the same images,
un-jittered and without dropout (the teacher in eval mode, no gradient), with the core's
:class:`~asr_kd.distill.online.OnlineDistillation` (``T^2 * KL`` at the main table's ``T``; the
student's soft term starts after a burn-in). Each model has its own optimiser and schedule over
the teacher's epochs and keeps its own best validation epoch. A checkpoint after every epoch
holds both models, both optimisers and every random stream, so a killed run resumes exactly.

Example
-------
>>> import torch
>>> from asr_kd.distill import DistillationLoss
>>> from asr_kd.distill.online import OnlineDistillation
>>> from asr_kd.models.mlp import MLP
>>> torch.manual_seed(0) and None
>>> x, y = torch.rand(64, 784), torch.randint(0, 10, (64,))
>>> t, s = MLP([784, 32, 10]), MLP([784, 16, 10])
>>> cfg = TrainConfig(epochs=2, batch_size=32, progress=False)
>>> online = OnlineDistillation(DistillationLoss(temperature=20.0, hard_weight=0.0, soft_weight=1.0))
>>> rt, rs = train_together(t, s, x, y, (x, y), cfg, cfg, seed=0, online=online)
>>> len(rt.history["val_errors"]), len(rs.history["val_errors"])
(2, 2)
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distill import DistillationLoss
from ..distill.online import OnlineDistillation
from ..io import write_atomic
from ..models.mlp import MLP, apply_max_norm
from .mnist import jitter as jitter_images
from .train import TrainConfig, TrainResult, _resumable, count_errors, make_optimizer, train_config


def train_together(
    teacher: nn.Module,
    student: nn.Module,
    x: Tensor,
    y: Tensor,
    val: tuple[Tensor, Tensor],
    teacher_cfg: TrainConfig,
    student_cfg: TrainConfig,
    seed: int,
    online: OnlineDistillation,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[TrainResult, TrainResult]:
    """Train ``teacher`` and ``student`` together in place for ``teacher_cfg.epochs`` epochs
    of ``teacher_cfg.batch_size`` (the student's learning rate follows ``student_cfg`` over the
    same steps); each is left with the weights of its own best validation epoch.

    ``checkpoint``: a file rewritten (atomically) after every epoch; a run started with the
    same file and settings continues after its last finished epoch and ends as an
    uninterrupted run would. It is not removed at the end (the caller does that).
    """
    device = x.device
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    g_jit = g if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    models = {"teacher": teacher, "student": student}
    cfgs = {"teacher": teacher_cfg, "student": student_cfg}
    opts = {k: make_optimizer(m, cfgs[k]) for k, m in models.items()}
    epochs, batch = teacher_cfg.epochs, teacher_cfg.batch_size
    steps_per_epoch = math.ceil(len(x) / batch)
    total = epochs * steps_per_epoch
    results = {k: TrainResult(formula=f) for k, f in (("teacher", "loss = 1 * hard"), ("student", str(online)))}
    best: dict[str, dict[str, Tensor]] = {}
    start, first = time.time(), 0
    settings = {k: _resumable(c) for k, c in cfgs.items()} | {"online": str(online)}
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state["settings"] != settings:
            raise ValueError(f"{checkpoint} holds an interrupted run with other settings; delete it to start over")
        for k in models:
            models[k].load_state_dict(state["models"][k])
            opts[k].load_state_dict(state["optimizers"][k])
            results[k] = state["results"][k]
            best[k] = {n: v.to(device) for n, v in state["best"][k].items()}
        g.set_state(state["rng"]["batches"])
        if g_jit is not g:
            g_jit.set_state(state["rng"]["jitter"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        first = len(results["teacher"].history["loss"])
        start -= state["seconds"]
    step = first * steps_per_epoch
    for epoch in range(first, epochs):
        order = torch.randperm(len(x), generator=g).to(device)
        sums = {k: torch.zeros((), device=device) for k in models}
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xs = x[idx]
            xt = jitter_images(xs, teacher_cfg.jitter, generator=g_jit) if teacher_cfg.jitter else xs
            for k, opt in opts.items():
                for group in opt.param_groups:
                    group["lr"] = cfgs[k].lr_at(step, total)
            teacher.eval()
            with torch.no_grad():  # the student's targets: the teacher now, on the student's images
                targets = teacher(xs)
            teacher.train()
            student.train()
            t_logits, s_logits = teacher(xt), student(xs)
            t_hard = F.cross_entropy(t_logits, y[idx])
            s_hard = F.cross_entropy(s_logits, y[idx]) if online.kd.weighted.weights["hard"] > 0 else t_hard * 0
            out = online([targets], s_logits, [t_hard], s_hard, step=step)
            for opt in opts.values():
                opt.zero_grad(set_to_none=True)
            out.total.backward()
            for opt in opts.values():
                opt.step()
            apply_max_norm(teacher, teacher_cfg.max_norm)
            sums["teacher"] += t_hard.detach() * len(idx)
            sums["student"] += (out.total - t_hard).detach() * len(idx)
            step += 1
        for k, m in models.items():
            errors = count_errors(m, *val)
            r = results[k]
            r.history["loss"].append(float(sums[k]) / len(x))
            r.history["val_errors"].append(errors)
            if k not in best or errors < r.best_val_errors:
                r.best_epoch, r.best_val_errors = epoch, errors
                best[k] = {n: v.detach().clone() for n, v in m.state_dict().items()}
        if checkpoint is not None and epoch + 1 < epochs:
            state = {
                "settings": settings,
                "models": {k: m.state_dict() for k, m in models.items()},
                "optimizers": {k: o.state_dict() for k, o in opts.items()},
                "results": results,
                "best": best,
                "seconds": time.time() - start,
                "rng": {
                    "batches": g.get_state(),
                    "jitter": g_jit.get_state(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                },
            }
            _save(Path(checkpoint), state)
    for k, m in models.items():
        m.load_state_dict(best[k])
        results[k].seconds = time.time() - start
    return results["teacher"], results["student"]


def _save(path: Path, state: dict) -> None:
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def run_online(recipe: Any) -> None:
    """Experiment ``online`` of ``recipe`` (a :class:`~asr_kd.image.recipe.Recipe`):
    ``online-teacher`` (the main table's teacher) and ``online-student{W}-soft-T{T}`` (the main
    table's soft-target student) trained together over the teacher's epochs; both scored on the
    test set. ``online.burn_in``: epochs before the student's soft term starts."""
    cfg, d = recipe.cfg, recipe.data
    t, w = cfg["distill"]["temperature"], cfg["student"]["sizes"][1]
    burn_in = float(cfg["online"]["burn_in"])
    t_spec = {**cfg["teacher"], "online": {"burn_in": burn_in}}
    s_spec = {
        **cfg["student"],
        "epochs": cfg["teacher"]["epochs"],
        "batch_size": cfg["teacher"]["batch_size"],
        "temperature": float(t),
        "hard_weight": 0.0,
        "soft_weight": cfg["distill"]["soft_weight"],
        "online": {"burn_in": burn_in, "with": "online-teacher"},
    }
    names = ("online-teacher", f"online-student{w}-soft-T{t:g}")
    loaded = [recipe._load(n, spec) for n, spec in zip(names, (t_spec, s_spec), strict=True)]
    if all(x is not None for x in loaded):
        recipe.log(f"online: found {names}, skipping training")
        for model, rec in loaded:
            recipe.score(model, rec, "online")
        return
    models = []
    for name, spec in zip(names, (t_spec, s_spec), strict=True):
        torch.manual_seed(recipe._model_seed(name))
        models.append(MLP(spec["sizes"], spec.get("dropout_input", 0.0), spec.get("dropout_hidden", 0.0)))
    teacher, student = (m.to(recipe.device) for m in models)
    tc, sc = train_config(t_spec, False, names[0]), train_config(s_spec, False, names[1])
    steps = math.ceil(len(d.train_x) / tc.batch_size)
    kd = DistillationLoss(temperature=float(t), hard_weight=0.0, soft_weight=s_spec["soft_weight"])
    online = OnlineDistillation(kd, burn_in=int(burn_in * steps))
    recipe.log(f"online: {names[0]} and {names[1]} together, {tc.epochs} epochs; {online}")
    ckpt = recipe._checkpoint_path("online", {"teacher": t_spec, "student": s_spec})
    if ckpt.exists():
        recipe.log(f"online: resuming the interrupted run from {ckpt}")
    seed = recipe._model_seed("online")
    runs = train_together(teacher, student, d.train_x, d.train_y, (d.val_x, d.val_y), tc, sc, seed, online, ckpt)
    for name, spec, model, run in zip(names, (t_spec, s_spec), (teacher, student), runs, strict=True):
        record = recipe.fit_record(name, spec, run, len(d.train_x))
        recipe._save(name, model, spec, record)
        recipe.score(model, record, "online")
    shutil.rmtree(ckpt.parent, ignore_errors=True)
