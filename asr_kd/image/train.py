"""Training and scoring loops for image classifiers, hard labels or distillation.

The whole data set sits in memory as one tensor; minibatches are plain tensor
indexing. A run keeps the weights of its best epoch on the validation split
(model selection never looks at the test set).

Example
-------
>>> import torch
>>> from asr_kd.models.mlp import MLP
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(256, 784, generator=g); y = (x[:, 0] > 0).long()
>>> net = MLP([784, 16, 10])
>>> cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=64, progress=False)
>>> run = train(net, x, y, val=(x, y), cfg=cfg, seed=0)
>>> run.history["loss"][-1] < run.history["loss"][0]
True
>>> count_errors(net, x, y) <= run.best_val_errors
True
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..distill import DistillationLoss
from ..models.mlp import apply_max_norm
from .config import SGD_KEYS
from .mnist import jitter as jitter_images


@dataclass
class TrainConfig:
    """Optimisation settings of one training run.

    Args:
        epochs: passes over the training set.
        lr: learning rate (peak, when ``schedule="cosine"``). For ``"sgd"`` it is the
            step per unit of averaged gradient: the momentum buffer is damped,
            ``v = m v + (1 - m) g``, as in the dropout papers, so raising the
            momentum does not raise the step size.
        batch_size: minibatch size.
        schedule: ``"constant"`` or ``"cosine"`` (decay to 0 over the run).
        optimizer: ``"adam"`` or ``"sgd"`` (with the damped momentum above).
        momentum: SGD momentum at the start.
        momentum_final: SGD momentum after ``momentum_epochs`` (linear ramp per step).
        momentum_epochs: length of the ramp in epochs (0: ``momentum`` throughout).
        weight_decay: weight decay (0: none).
        max_norm: cap on each unit's incoming weight norm after every step (0: none).
        jitter: random shift of the inputs by up to this many pixels (0: none).
        select: ``"best"`` keeps the epoch with the fewest validation errors; ``"last"`` keeps
            the last epoch (for a model whose validation images are in its transfer set).
        progress: show a tqdm bar per epoch.
        desc: label of the progress bar.
    """

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    schedule: str = "cosine"
    optimizer: str = "adam"
    momentum: float = 0.5
    momentum_final: float = 0.99
    momentum_epochs: int = 0
    weight_decay: float = 0.0
    max_norm: float = 0.0
    jitter: int = 0
    select: str = "best"
    progress: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {self.select!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs, batch_size and lr must be positive: {self}")
        if not (0 <= self.momentum < 1 and 0 <= self.momentum_final < 1) or self.momentum_epochs < 0:
            raise ValueError(f"momenta must lie in [0, 1) and momentum_epochs be >= 0: {self}")

    def momentum_at(self, step: int, steps_per_epoch: int) -> float:
        """SGD momentum at ``step``: a linear ramp over ``momentum_epochs``, then flat.

        >>> TrainConfig(momentum=0.5, momentum_final=0.9, momentum_epochs=2).momentum_at(10, 10)
        0.7
        """
        ramp = self.momentum_epochs * steps_per_epoch
        if ramp <= 0:
            return self.momentum
        frac = min(step / ramp, 1.0)
        return self.momentum + frac * (self.momentum_final - self.momentum)

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate at ``step`` of ``total_steps`` (cosine decay to 0, or constant)."""
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
        return self.lr


@dataclass
class TrainResult:
    """What a run did: per-epoch history, the chosen epoch and its validation errors."""

    history: dict[str, list[float]] = field(default_factory=lambda: {"loss": [], "val_errors": []})
    best_epoch: int = -1
    best_val_errors: int = -1
    seconds: float = 0.0
    formula: str = ""


@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor, batch_size: int = 2000) -> Tensor:
    """The model's logits for ``x`` in eval mode (no dropout), batched."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def count_errors(model: nn.Module, x: Tensor, y: Tensor, bias_shift: Tensor | None = None) -> int:
    """Number of misclassified examples (logits plus an optional per-class ``bias_shift``)."""
    logits = logits_of(model, x)
    if bias_shift is not None:
        logits = logits + bias_shift
    return int((logits.argmax(-1) != y).sum())


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, or SGD with the damped momentum of :class:`TrainConfig` (updated per step)."""
    if cfg.optimizer == "sgd":
        m = cfg.momentum
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=m, dampening=m, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    val: tuple[Tensor, Tensor],
    cfg: TrainConfig,
    seed: int,
    teacher_logits: Tensor | None = None,
    distill: DistillationLoss | None = None,
    teacher: nn.Module | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``model`` in place; leave it with the weights of its best validation epoch
    (of its last epoch with ``cfg.select="last"``).

    Runs on the device of ``x`` (model, labels, validation data and teacher must be there
    too). On CUDA nothing waits for the GPU inside an epoch: losses are summed on the
    device and read once per epoch, with the validation score.

    Args:
        x, y: training inputs ``(N, D)`` and labels ``(N,)`` (the transfer set when distilling).
        val: validation inputs and labels, scored after every epoch.
        cfg: optimisation settings (``cfg.jitter`` shifts the inputs of every batch).
        seed: seeds the batch order, dropout and jitter.
        teacher_logits: ``(N, C)`` teacher logits aligned with ``x`` (distillation on fixed
            transfer images).
        distill: the loss ``hard_weight * CE + soft_weight * T^2 KL``; ``None`` trains on
            hard labels with cross-entropy.
        teacher: instead of ``teacher_logits``, a teacher model run (in eval mode) on each
            batch as the student sees it, jittered ones included.
        checkpoint: a file rewritten (atomically) after every epoch with the weights, the
            optimiser and every random stream; a run started with the same file and settings
            continues after the last finished epoch and ends with the same weights as an
            uninterrupted run. It is not removed at the end (the caller does that).
    """
    if distill is not None and (teacher_logits is None) == (teacher is None):
        raise ValueError("distillation needs exactly one of teacher_logits and teacher")
    if distill is None and (teacher_logits is not None or teacher is not None):
        raise ValueError("teacher_logits or teacher given without a distill loss")
    if teacher_logits is not None and teacher_logits.shape[0] != x.shape[0]:
        raise ValueError(f"teacher_logits has {teacher_logits.shape[0]} rows, x has {x.shape[0]}")
    device = x.device
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    # Jitter draws its shifts where the images are; on the CPU from the same stream as the
    # batch order (as before devices existed), on a GPU from a generator of its own.
    g_jit = g if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    if teacher is not None:
        teacher.eval()
    opt = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    result = TrainResult(formula=str(distill) if distill is not None else "loss = 1 * hard[cross-entropy]")
    best_state: dict[str, Tensor] | None = None
    start = time.time()
    step = first_epoch = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state["config"] != _resumable(cfg):
            raise ValueError(
                f"{checkpoint} holds an interrupted run with other settings ({state['config']}); "
                f"delete it to start this one ({_resumable(cfg)}) from scratch"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["rng"]["batches"])
        if g_jit is not g:
            g_jit.set_state(state["rng"]["jitter"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        best_state = {k: v.to(device) for k, v in state["best_state"].items()}
        result.history = state["history"]
        result.best_epoch, result.best_val_errors = state["best"]
        first_epoch = len(result.history["loss"])
        step = first_epoch * steps_per_epoch
        start -= state["seconds"]
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, initial=first_epoch, desc=cfg.desc, unit="epoch", leave=True, dynamic_ncols=True)
    for epoch in range(first_epoch, cfg.epochs):
        model.train()
        order = torch.randperm(len(x), generator=g).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb = x[idx]
            if cfg.jitter:
                xb = jitter_images(xb, cfg.jitter, generator=g_jit)
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step, total_steps)
                if cfg.optimizer == "sgd":
                    group["momentum"] = group["dampening"] = cfg.momentum_at(step, steps_per_epoch)
            logits = model(xb)
            if distill is None:
                loss = F.cross_entropy(logits, y[idx])
            else:
                if teacher is not None:
                    with torch.no_grad():
                        soft = teacher(xb)
                else:
                    assert teacher_logits is not None  # checked on entry
                    soft = teacher_logits[idx]
                hard = F.cross_entropy(logits, y[idx]) if distill.weighted.weights["hard"] > 0 else None
                loss = distill(logits, soft, hard=hard).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            apply_max_norm(model, cfg.max_norm)
            loss_sum += loss.detach() * len(idx)
            step += 1
        val_errors = count_errors(model, *val)
        mean_loss = float(loss_sum) / len(x)
        result.history["loss"].append(mean_loss)
        result.history["val_errors"].append(val_errors)
        last = epoch + 1 == cfg.epochs
        if best_state is None or val_errors < result.best_val_errors or (cfg.select == "last" and last):
            result.best_epoch, result.best_val_errors = epoch, val_errors
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if checkpoint is not None and epoch + 1 < cfg.epochs:
            _save_checkpoint(
                Path(checkpoint),
                cfg,
                model,
                opt,
                best_state,
                result,
                time.time() - start,
                {
                    "batches": g.get_state(),
                    "jitter": g_jit.get_state(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                },
            )
        if bar is not None:
            bar.set_postfix(loss=f"{mean_loss:.4f}", val_err=val_errors, best=result.best_val_errors)
            bar.update(1)
    if bar is not None:
        bar.close()
    assert best_state is not None
    model.load_state_dict(best_state)
    result.seconds = time.time() - start
    return result


def _resumable(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a checkpoint must share with the run that resumes it."""
    out = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "desc")}
    if out["select"] == "best":  # checkpoints written before `select` existed still resume
        del out["select"]
    return out


def _save_checkpoint(
    path: Path,
    cfg: TrainConfig,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    best_state: dict[str, Tensor],
    result: TrainResult,
    seconds: float,
    rng: dict[str, Any],
) -> None:
    state = {
        "config": _resumable(cfg),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "best_state": best_state,
        "history": result.history,
        "best": (result.best_epoch, result.best_val_errors),
        "seconds": seconds,
        "rng": rng,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def tune_bias(
    logits: Tensor,
    y: Tensor,
    classes: Sequence[int],
    grid: Sequence[float],
) -> tuple[float, dict[str, Any]]:
    """The shift, added to the logits of ``classes``, that minimises errors on (validation) data.

    Ties go to the shift nearest 0. Returns the shift and a small report.

    >>> logits = torch.tensor([[2.0, 1.0], [2.0, 1.5], [0.0, 1.0]])
    >>> tune_bias(logits, torch.tensor([0, 1, 1]), classes=[1], grid=[0.0, 1.0, 2.0])[0]
    1.0
    """
    if len(grid) == 0:
        raise ValueError("the bias grid is empty")
    best: tuple[int, float, float] | None = None
    for shift in grid:
        shifted = logits.clone()
        shifted[:, list(classes)] += shift
        errors = int((shifted.argmax(-1) != y).sum())
        key = (errors, abs(shift), shift)
        if best is None or key < best:
            best = key
    assert best is not None
    errors_before = int((logits.argmax(-1) != y).sum())
    return best[2], {"val_errors_before": errors_before, "val_errors_after": best[0]}


def train_config(spec: Mapping[str, Any], progress: bool = False, desc: str = "train") -> TrainConfig:
    """The optimisation settings of a model spec (a ``teacher`` / ``student`` config section)."""
    return TrainConfig(
        epochs=spec["epochs"],
        lr=spec["lr"],
        batch_size=spec["batch_size"],
        schedule=spec["schedule"],
        optimizer=spec.get("optimizer", "adam"),
        **{k: spec[k] for k in SGD_KEYS if k in spec},
        max_norm=spec.get("max_norm", 0.0),
        jitter=spec.get("jitter", spec.get("transfer_jitter", 0)),
        select=spec.get("select", "best"),
        progress=progress,
        desc=desc,
    )
