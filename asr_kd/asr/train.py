"""Training one CTC model with :class:`~asr_kd.asr.brain.CTCBrain`; it leaves as a model bundle.

:func:`train_spec` trains a recipe's model from its spec on the experiment's stored features;
:func:`train_ctc` trains a teacher or a student in ``out_dir``: SpeechBrain checkpoints
(atomic, the latest and the best by validation WER kept) under ``out_dir/ckpt``, the
per-epoch history in ``history.json``, and finally the best model as a self-contained
bundle ``model.pt`` (architecture, weights, fingerprint, normalisation, tokenizer path).
A bundle present means the model is finished and training is skipped; a run killed
mid-epoch resumes from the last end-of-epoch checkpoint and repeats that epoch with
the same random numbers (seeded per epoch), so it ends where an uninterrupted run ends.

Example
-------
>>> cfg = TrainSettings(epochs=10, lr=1e-3, warmup=0.1)
>>> lr = lr_schedule(cfg, steps_per_epoch=10)
>>> round(lr(1, 1), 6), round(lr(2, 1), 6), round(lr(10, 10), 8)
(0.0001, 0.001, 0.0)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from asr_kd import distributed
from asr_kd.asr.checkpoint import AtomicCheckpointer
from asr_kd.asr.data import BucketBatchSampler, draw_subset, encode_transcripts, make_dataset, merge_features
from asr_kd.asr.settings import TrainSettings
from asr_kd.data.features import FeatureNorm, GlobalCMVN, SpecAugmentConfig
from asr_kd.io import read_json, write_json
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel, count_parameters
from asr_kd.models.bundle import save_bundle

if TYPE_CHECKING:
    from asr_kd.asr.context import Context
    from asr_kd.asr.specs import ModelSpec

log = logging.getLogger(__name__)


def lr_schedule(cfg: TrainSettings, steps_per_epoch: int) -> Callable[[int, int], float]:
    """``(epoch, step) -> lr``: linear warm-up over ``cfg.warmup`` of all steps, then cosine to 0."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = max(1, int(cfg.warmup * total))

    def lr_at(epoch: int, step: int) -> float:
        t = (epoch - 1) * steps_per_epoch + step  # 1-based global step
        if t <= warm:
            return cfg.lr * t / warm
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warm) / max(1, total - warm))))

    return lr_at


# ----------------------------------------------------------------------------- training


def train_ctc(
    out_dir: str | os.PathLike,
    model_cfg: AcousticConfig,
    train_set,
    train_lengths: list[int],
    valid_set,
    cmvn: GlobalCMVN,
    cfg: TrainSettings,
    seed: int,
    info: Mapping[str, Any],
    detokenize: Callable,
    tokenizer_dir: str | os.PathLike | None = None,
    augment: SpecAugmentConfig | None = SpecAugmentConfig(),
    device: str = "cpu",
    progress: bool = True,
    select: str = "best",
    init_state: Mapping[str, torch.Tensor] | None = None,
    **hparams: Any,
) -> Path:
    """Train one CTC model in ``out_dir`` (resumably) and return the path of its ``model.pt``.

    Args:
        train_set, valid_set: datasets from :func:`asr_kd.asr.data.make_dataset`.
        train_lengths: frames per training item, in dataset order (for length buckets).
        info: stored in the bundle (fingerprint, name, tokenizer, ...).
        select: the epoch kept: ``best`` validation WER, or ``last`` (no early stopping).
        init_state: starting weights (default: random); a resumed run takes its checkpoint's.
        hparams: more ``CTCBrain`` hparams (``kd``, ``teacher_cache`` or ``live_teachers``,
            ``guide_weight``, ...), and
            ``hints`` (:class:`~asr_kd.asr.hints.Hints`: intermediate-layer distillation).
    """
    from speechbrain.dataio.dataloader import make_dataloader
    from speechbrain.utils.epoch_loop import EpochCounter

    from asr_kd.asr.brain import CTCBrain

    out = Path(out_dir)
    device = distributed.local_device(device)
    bundle_path = out / "model.pt"
    if bundle_path.exists():
        log.info(f"{out.name}: trained already ({bundle_path}), skipped")
        return bundle_path
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CTCAcousticModel(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    norm = FeatureNorm(cmvn, augment)
    counter = EpochCounter(cfg.epochs)
    modules: dict[str, torch.nn.Module] = {"model": model, "frontend": norm}
    hints = hparams.pop("hints", None)
    if hints is not None:  # intermediate-layer distillation: its projection trains and resumes too
        modules["hint"] = hints.build(model)
        hparams.update(hint_teacher=hints.teacher.to(device), hint_weight=hints.weight)
    if hparams.get("live_teachers"):  # frozen members that label each training batch (not checkpointed)
        hparams["live_teachers"] = [t.to(device).eval().requires_grad_(False) for t in hparams["live_teachers"]]
    recoverables = {k: v for k, v in modules.items() if k != "frontend"}  # its statistics are fixed
    ckpt = AtomicCheckpointer(out / "ckpt", recoverables={**recoverables, "counter": counter})
    # under torchrun each process takes its share of every (global) batch: see BucketBatchSampler
    sampler = BucketBatchSampler(
        train_lengths, cfg.batch_size, seed=seed, rank=distributed.rank(), world=distributed.world_size()
    )
    history_path = out / "history.json"
    history: dict[str, Any] = read_json(history_path) if history_path.exists() else {}

    def record(epoch: int, stats: dict) -> None:
        history[str(epoch)] = {**stats, "batches": len(sampler), "seconds": round(time.time() - started, 1)}
        write_json(history_path, history)

    log.info(
        f"{out.name}: {count_parameters(model):,} parameters, {cfg.epochs} epochs, "
        f"{len(sampler)} batches per epoch, seed {seed}"
    )
    brain = CTCBrain(
        modules=modules,
        opt_class=lambda params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        hparams={
            "detokenize": detokenize,
            "seed": seed,
            "lr_at": lr_schedule(cfg, len(sampler)),
            "history": record,
            "name": out.name,
            **hparams,
        },
        run_opts={
            "device": device,
            "noprogressbar": not progress or not distributed.is_main(),
            "max_grad_norm": cfg.max_grad_norm,
            "distributed_backend": distributed.backend_for(device),
        },
        checkpointer=ckpt,
    )
    brain.train_sampler = sampler
    started = time.time()
    brain.fit(
        counter,
        # under torchrun the loader is made here, so SpeechBrain does not split the batches a second time
        make_dataloader(train_set, batch_sampler=sampler) if distributed.active() else train_set,
        valid_set,
        train_loader_kwargs={"batch_sampler": sampler},
        valid_loader_kwargs={"batch_size": cfg.batch_size},
    )
    if not distributed.is_main():  # rank 0 writes the bundle; the others wait for it
        distributed.barrier()
        return bundle_path
    best = ckpt.find_checkpoint(min_key="WER") if select == "best" else ckpt.find_checkpoint(max_key="epoch")
    if best is None:
        raise RuntimeError(f"{out}: training ended without a checkpoint; look at the log above")
    ckpt.load_checkpoint(best)
    model.to("cpu")
    save_bundle(
        bundle_path,
        model,
        cmvn,
        {
            **info,
            "best_epoch": int(best.meta.get("epoch", 0)),
            "valid_wer": float(best.meta["WER"]),
            "parameters": count_parameters(model),
            "train": asdict(cfg),
            "seed": seed,
            **({"selected": select} if select != "best" else {}),
        },
        tokenizer_dir=tokenizer_dir,
    )
    log.info(
        f"{out.name}: {select} epoch {best.meta.get('epoch')} (valid WER {100 * best.meta['WER']:.2f}) -> {bundle_path}"
    )
    distributed.barrier()
    return bundle_path


def train_spec(
    ctx: Context,
    spec: ModelSpec,
    texts: Mapping[str, str] | None = None,
    unlabelled: Sequence[str] = (),
    token_map: Callable[[list[int]], list[int]] | None = None,
    num_classes: int | None = None,
    **hparams: Any,
) -> Path:
    """Train ``spec`` on the run's training features (transcripts ``texts``, default the
    training set's; ``unlabelled`` utterances without one), selecting the epoch on the
    validation set; returns its bundle's path. A student with ``spec.transfer`` also reads
    the transfer set's features. ``token_map`` and ``num_classes``: a model of other classes
    than the tokenizer's (a specialist), its targets mapped from the tokenizer's IDs (its
    validation error rate is then over those classes)."""
    exp = ctx.exp
    tok = exp.tokenizer()
    encode = tok.encode if token_map is None else (lambda text: token_map(tok.encode(text)))
    train_tokens = encode_transcripts(texts if texts is not None else exp.texts("train"), encode)
    if spec.subset < 1:  # a small share of the transcribed utterances (small_data: the paper's Table 5)
        train_tokens = {u: train_tokens[u] for u in draw_subset(list(train_tokens), spec.subset, spec.subset_seed)}
        log.info(f"  {spec.name}: {len(train_tokens)} training utterances ({100 * spec.subset:g}% drawn)")
    train_tokens.update({u: [] for u in unlabelled})  # no transcript: no CTC term (asr_kd.asr.brain)
    valid_tokens = encode_transcripts(exp.texts("valid"), encode, "validation transcript", skip=log.warning)
    feats, vfeats = exp.feats("train"), exp.feats("valid")
    if spec.transfer:
        feats = merge_features(feats, exp.feats("transfer"))
    augment = ctx.settings.specaugment
    return train_ctc(
        exp.model_dir(spec.name),
        ctx.architecture(spec) if num_classes is None else spec.architecture(num_classes, ctx.settings.features.n_mels),
        make_dataset(feats, train_tokens),
        [len(feats[i]) for i in train_tokens],
        make_dataset(vfeats, valid_tokens),
        exp.cmvn(),
        spec.train,
        spec.seed,
        info={"name": spec.name, "fingerprint": ctx.fingerprint()},
        detokenize=(lambda ids: tok.decode([int(i) for i in ids]))
        if token_map is None
        else (lambda ids: " ".join(str(int(i)) for i in ids)),
        tokenizer_dir=exp.tokenizer_dir,
        augment=SpecAugmentConfig(**augment.to_dict()) if augment is not None else None,
        device=ctx.device,
        progress=ctx.settings.progress,
        select=spec.select,
        **hparams,
    )
