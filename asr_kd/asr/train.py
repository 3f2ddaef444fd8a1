"""Training one CTC model with :class:`~asr_kd.asr.brain.CTCBrain`, and the saved model bundle.

:func:`train_ctc` trains a teacher or a student in ``out_dir``: SpeechBrain checkpoints
(atomic, the latest and the best by validation WER kept) under ``out_dir/ckpt``, the
per-epoch history in ``history.json``, and finally the best model as a self-contained
bundle ``model.pt`` (architecture, weights, fingerprint, normalisation, tokenizer path).
A bundle present means the model is finished and training is skipped; a run killed
mid-epoch resumes from the last end-of-epoch checkpoint and repeats that epoch with
the same random numbers (seeded per epoch), so it ends where an uninterrupted run ends.

Example
-------
>>> cfg = TrainConfig(epochs=10, lr=1e-3, warmup=0.1)
>>> lr = lr_schedule(cfg, steps_per_epoch=10)
>>> round(lr(1, 1), 6), round(lr(2, 1), 6), round(lr(10, 10), 8)
(0.0001, 0.001, 0.0)
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from asr_kd.asr.checkpoint import AtomicCheckpointer
from asr_kd.asr.data import BucketBatchSampler, FeatureNorm
from asr_kd.io import write_atomic
from asr_kd.errors import UserError
from asr_kd.data.features import GlobalCMVN, SpecAugmentConfig
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel, count_parameters


@dataclass
class TrainConfig:
    """Optimisation settings (AdamW, linear warm-up then cosine decay to 0)."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup: float = 0.1  #: share of all steps spent warming up
    max_grad_norm: float = 5.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def lr_schedule(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int, int], float]:
    """``(epoch, step) -> lr``: linear warm-up over ``cfg.warmup`` of all steps, then cosine to 0."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = max(1, int(cfg.warmup * total))

    def lr_at(epoch: int, step: int) -> float:
        t = (epoch - 1) * steps_per_epoch + step  # 1-based global step
        if t <= warm:
            return cfg.lr * t / warm
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warm) / max(1, total - warm))))

    return lr_at


# ----------------------------------------------------------------------------- bundles


def save_bundle(path: str | os.PathLike, model: CTCAcousticModel, cmvn: GlobalCMVN, info: Mapping[str, Any],
                tokenizer_dir: str | os.PathLike | None = None) -> None:
    """Write a self-contained model file (atomically): config, weights, normalisation, the
    tokenizer's files (so the bundle decodes to text anywhere) and ``info``."""
    files = {}
    if tokenizer_dir is not None:
        files = {p.name: p.read_bytes() for p in Path(tokenizer_dir).iterdir() if p.name.startswith("tokenizer")}
    bundle = {
        "config": model.cfg.to_dict(),
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "cmvn": {"mean": cmvn.mean.cpu(), "std": cmvn.std.cpu()},
        "tokenizer_files": files,
        "info": dict(info),
    }
    write_atomic(path, lambda tmp: torch.save(bundle, tmp))


@dataclass
class LoadedModel:
    """A model bundle loaded for inference."""

    model: CTCAcousticModel
    norm: FeatureNorm
    info: dict
    tokenizer_files: dict

    def tokenizer(self):
        """The tokenizer the model was trained with (from the bundle's own copy)."""
        import tempfile

        from asr_kd.data.tokenizer import load_tokenizer

        if not self.tokenizer_files:
            raise ValueError("this model bundle holds no tokenizer")
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in self.tokenizer_files.items():
                (Path(tmp) / name).write_bytes(data)
            return load_tokenizer(tmp)

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    def to(self, device: str | torch.device) -> "LoadedModel":
        self.model.to(device)
        self.norm.to(device)
        return self

    @torch.no_grad()
    def log_probs(self, feats: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw log-Mel features -> ``(B, T, classes)`` log-probabilities and output frame counts."""
        self.model.eval()
        x = self.norm(feats, frames, augment=False)
        logits, n = self.model(x, frames.to(x.device))
        return logits.log_softmax(-1), n


class BundleError(UserError):
    """A path that does not hold a usable model bundle; the message names it and the fix."""


def load_bundle(path: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """Load a ``model.pt`` bundle (or a folder holding one).

    Raises:
        BundleError: no bundle there, or the file is not one (another file, truncated, or
            written by an incompatible version).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.exists():
        raise BundleError(f"{p}: no trained model here; train it with `asr-kd run CONFIG` first")
    try:
        bundle = torch.load(p, map_location="cpu", weights_only=False)
        config = AcousticConfig(**bundle["config"])
        state, cmvn_state = bundle["state"], bundle["cmvn"]
    except Exception as err:  # noqa: BLE001 - unpickling fails in many ways on a wrong file
        raise BundleError(f"{p}: not a model bundle of asr-kd ({type(err).__name__}: {err}); give the model.pt "
                          "written by `asr-kd run` (models/NAME/model.pt) or its folder") from None
    model = CTCAcousticModel(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BundleError(f"{p}: its weights do not fit its architecture; the file is damaged, train it again "
                          f"({str(err).splitlines()[0]})") from None
    bundle["cmvn"] = cmvn_state
    cmvn = GlobalCMVN(len(bundle["cmvn"]["mean"]))
    cmvn.mean.copy_(bundle["cmvn"]["mean"])
    cmvn.std.copy_(bundle["cmvn"]["std"])
    return LoadedModel(model, FeatureNorm(cmvn, augment=None), dict(bundle["info"]),
                       dict(bundle.get("tokenizer_files", {}))).to(device)


# ----------------------------------------------------------------------------- training


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


def train_ctc(
    out_dir: str | os.PathLike,
    model_cfg: AcousticConfig,
    train_set,
    train_lengths: list[int],
    valid_set,
    cmvn: GlobalCMVN,
    cfg: TrainConfig,
    seed: int,
    info: Mapping[str, Any],
    detokenize: Callable,
    tokenizer_dir: str | os.PathLike | None = None,
    augment: SpecAugmentConfig | None = SpecAugmentConfig(),
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    **hparams: Any,
) -> Path:
    """Train one CTC model in ``out_dir`` (resumably) and return the path of its ``model.pt``.

    Args:
        train_set, valid_set: datasets from :func:`asr_kd.asr.data.make_dataset`.
        train_lengths: frames per training item, in dataset order (for length buckets).
        info: stored in the bundle (fingerprint, name, tokenizer, ...).
        hparams: more ``CTCBrain`` hparams (``kd``, ``teacher_cache``, ``guide_weight``, ...).
    """
    from asr_kd.asr.brain import CTCBrain
    from speechbrain.utils.epoch_loop import EpochCounter

    out = Path(out_dir)
    bundle_path = out / "model.pt"
    if bundle_path.exists():
        log(f"{out.name}: trained already ({bundle_path}), skipped")
        return bundle_path
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CTCAcousticModel(model_cfg)
    norm = FeatureNorm(cmvn, augment)
    counter = EpochCounter(cfg.epochs)
    ckpt = AtomicCheckpointer(out / "ckpt", recoverables={"model": model, "counter": counter})
    sampler = BucketBatchSampler(train_lengths, cfg.batch_size, seed=seed)
    history_path = out / "history.json"
    history: dict[str, Any] = json.loads(history_path.read_text()) if history_path.exists() else {}

    def record(epoch: int, stats: dict) -> None:
        history[str(epoch)] = {**stats, "seconds": round(time.time() - started, 1)}
        _write_json(history_path, history)

    log(f"{out.name}: {count_parameters(model):,} parameters, {cfg.epochs} epochs, "
        f"{len(sampler)} batches per epoch, seed {seed}")
    brain = CTCBrain(
        modules={"model": model, "frontend": norm},
        opt_class=lambda params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        hparams={"detokenize": detokenize, "seed": seed, "lr_at": lr_schedule(cfg, len(sampler)),
                 "history": record, "log": lambda m: log(f"{out.name} {m}"), **hparams},
        run_opts={"device": device, "noprogressbar": not progress, "max_grad_norm": cfg.max_grad_norm},
        checkpointer=ckpt,
    )
    brain.train_sampler = sampler
    started = time.time()
    brain.fit(
        counter,
        train_set,
        valid_set,
        train_loader_kwargs={"batch_sampler": sampler},
        valid_loader_kwargs={"batch_size": cfg.batch_size},
    )
    best = ckpt.find_checkpoint(min_key="WER")
    if best is None:
        raise RuntimeError(f"{out}: training ended without a checkpoint; look at the log above")
    ckpt.load_checkpoint(best)
    model.to("cpu")
    save_bundle(bundle_path, model, cmvn, {
        **info, "best_epoch": int(best.meta.get("epoch", 0)), "valid_wer": float(best.meta["WER"]),
        "parameters": count_parameters(model), "train": asdict(cfg), "seed": seed,
    }, tokenizer_dir=tokenizer_dir)
    log(f"{out.name}: best epoch {best.meta.get('epoch')} (valid WER {best.meta['WER']:.2f}) -> {bundle_path}")
    return bundle_path
