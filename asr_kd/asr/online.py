"""Stage ``online``: the peers and a student trained together, in one pass (issue 14).

The two-pass pipeline trains the teachers, caches their ensemble's posteriors, then trains the
students: "the training twice" the paper names as distillation's first limit. Here the peers
(teacher 0..N-1's models and seeds) and the student (``student-kd``'s size and seed) see the same
augmented batches; each step the peers' current frame posteriors, combined like the ensemble
(``ensemble.method``) and detached, are the student's soft targets with the two-pass student's loss
(``students.kd``: ``w_hard * CTC + w_soft * T^2 * KL``, masked per frame), through the core's
:class:`~asr_kd.distill.online.OnlineDistillation`. With ``online.mutual_weight`` > 0 each peer
also learns from the others (deep mutual learning); no soft term starts before
``online.burn_in`` epochs. Nothing is cached to disk.

Each model has its own AdamW, gradient clipping and learning-rate schedule (the recipe's
``train``), so a peer trained online without mutual terms is a teacher that saw the student's
batch order. Every model keeps its own best epoch by its own validation WER; the stage leaves
bundles ``online-peer-I`` and ``online-student`` that ``score``, ``evaluate`` and ``transcribe``
treat like any other. A run killed mid-epoch resumes from the last end-of-epoch checkpoint and
repeats that epoch with the same random numbers.

Example
-------
    from asr_kd.asr.online import train_online
    train_online(ctx)       # EXP/models/online-peer-0 ... online-student/model.pt
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import speechbrain as sb
import torch
from speechbrain.utils.metric_stats import ErrorRateStats

from asr_kd import distributed
from asr_kd.asr.brain import CTCBrain, absolute_lengths, ctc_loss
from asr_kd.asr.checkpoint import AtomicCheckpointer
from asr_kd.asr.context import Context
from asr_kd.asr.data import NO_TRANSCRIPT, BucketBatchSampler, encode_transcripts, make_dataset
from asr_kd.asr.decode import greedy_decode
from asr_kd.asr.train import lr_schedule
from asr_kd.data.features import FeatureNorm, SpecAugmentConfig
from asr_kd.distill import DistillationLoss
from asr_kd.distill.online import OnlineDistillation
from asr_kd.io import read_json, write_json
from asr_kd.models.acoustic import CTCAcousticModel, count_parameters
from asr_kd.models.bundle import save_bundle
from asr_kd.models.frontend import frame_mask

log = logging.getLogger(__name__)


class OnlineBrain(CTCBrain):
    """Peers and a student in one Brain: ``modules`` ``frontend`` and one model per name of
    ``hparams.names`` (the peers', then the student's, last); ``hparams.online``
    (:class:`OnlineDistillation`), ``burn_in_steps``, ``steps_per_epoch``, ``lr_at``, ``seed``,
    ``detokenize``, ``history`` (``(epoch, {name: stats})``)."""

    def init_optimizers(self) -> None:
        self.optimizers_dict = {n: self.opt_class(self.modules[n].parameters()) for n in self.hparams.names}
        self.optimizer = self.optimizers_dict[self.hparams.names[-1]]
        if self.checkpointer is not None:
            for n, opt in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(f"optimizer-{n}", opt)

    def on_fit_batch_start(self, batch, should_step):
        lr = self.hparams.lr_at(getattr(self, "_epoch", 1), self.step)
        for opt in getattr(self, "optimizers_dict", {}).values():
            for group in opt.param_groups:
                group["lr"] = lr

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        feats, rel = batch.feats
        lengths = absolute_lengths(rel, feats.shape[1])
        feats = self.modules.frontend(feats, lengths, augment=stage == sb.Stage.TRAIN)  # one draw for all
        return [self.modules[n](feats, lengths) for n in self.hparams.names]

    def compute_objectives(self, predictions, batch, stage):
        tokens, rel = batch.tokens
        token_lengths = absolute_lengths(rel, tokens.shape[1])
        token_lengths = torch.where(tokens[:, 0] == NO_TRANSCRIPT, 0, token_lengths)
        hard = [ctc_loss(lg.log_softmax(-1), tokens, n, token_lengths) for lg, n in predictions]
        if stage != sb.Stage.TRAIN:
            pairs = zip(tokens.cpu(), token_lengths.cpu(), strict=True)
            refs = [self.hparams.detokenize(t[: int(k)].tolist()).split() for t, k in pairs]
            for name, (logits, n) in zip(self.hparams.names, predictions, strict=True):
                hyps = [self.hparams.detokenize(h).split() for h in greedy_decode(logits.log_softmax(-1), n)]
                self.wer_metrics[name].append(batch.id, hyps, refs)
            return sum(hard) / len(hard)
        logits = [lg for lg, _ in predictions]
        mask = frame_mask(predictions[-1][1], logits[-1].shape[1])
        step = (self._epoch - 1) * self.hparams.steps_per_epoch + self.step
        out = self.hparams.online(logits[:-1], logits[-1], hard[:-1], hard[-1], mask=mask, step=step)
        return out.total

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        if stage != sb.Stage.TRAIN:
            self.wer_metrics = {n: ErrorRateStats() for n in self.hparams.names}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:  # under torchrun: the mean over the processes
            self.train_loss = distributed.mean(stage_loss)
            return
        wers = {n: m.summarize("error_rate") / 100 for n, m in self.wer_metrics.items()}
        self.last_stats = {"loss": stage_loss, **{f"WER-{n}": w for n, w in wers.items()}}
        if stage == sb.Stage.VALID:
            if distributed.is_main():
                log.info(
                    f"online epoch {epoch}: train loss {self.train_loss:.3f}, valid WER "
                    + ", ".join(f"{n} {100 * w:.2f}" for n, w in wers.items())
                )
                self.hparams.history(epoch, {"train_loss": float(self.train_loss), "valid_wer": wers})
            if self.checkpointer is not None:  # the best epoch of every model, and the latest
                keys = [f"WER-{n}" for n in wers]
                meta = {**{f"WER-{n}": w for n, w in wers.items()}, "epoch": epoch}
                self.checkpointer.save_and_keep_only(meta=meta, min_keys=keys, num_to_keep=1)


def train_online(ctx: Context) -> None:
    """Stage ``online``: train ``ctx.plan.online`` (peers, then the student) together."""
    from speechbrain.dataio.dataloader import make_dataloader
    from speechbrain.utils.epoch_loop import EpochCounter

    exp, s, specs = ctx.exp, ctx.settings, ctx.plan.online
    names = [sp.name for sp in specs]
    if all(exp.bundle(n).exists() for n in names):
        log.info("online: trained already, skipped")
        return
    tok = exp.tokenizer()
    tokens = encode_transcripts(exp.texts("train"), tok.encode)
    valid = encode_transcripts(exp.texts("valid"), tok.encode, "validation transcript", skip=log.warning)
    feats, vfeats = exp.feats("train"), exp.feats("valid")
    cfg, student = s.train, specs[-1]
    modules: dict[str, torch.nn.Module] = {}
    for sp in specs:
        torch.manual_seed(sp.seed)  # each model's initial weights: its two-pass counterpart's
        modules[sp.name] = CTCAcousticModel(ctx.architecture(sp))
    augment = SpecAugmentConfig(**s.specaugment.to_dict()) if s.specaugment is not None else None
    cmvn = exp.cmvn()
    modules["frontend"] = FeatureNorm(cmvn, augment)
    out = exp.model_dir("online")
    out.mkdir(parents=True, exist_ok=True)
    counter = EpochCounter(cfg.epochs)
    recoverables = {n: m for n, m in modules.items() if n != "frontend"}
    ckpt = AtomicCheckpointer(out / "ckpt", recoverables={**recoverables, "counter": counter})
    sampler = BucketBatchSampler(  # under torchrun: this process's share of every global batch
        [len(feats[i]) for i in tokens],
        cfg.batch_size,
        seed=student.seed,
        rank=distributed.rank(),
        world=distributed.world_size(),
    )
    kd = s.students.kd
    if kd.hint_weight > 0:
        log.warning("online: students.kd.hint_weight is not used here (the peers train; no frozen teacher)")
    online = OnlineDistillation(
        DistillationLoss(float(kd.temperature), float(kd.hard_weight), float(kd.soft_weight), kd.soft),
        method=s.ensemble.method,
        weights=s.ensemble.weights,
        mutual_weight=s.online.mutual_weight,
        burn_in=int(s.online.burn_in * len(sampler)),
    )
    log.info(f"online: {online}; " + ", ".join(f"{n} {count_parameters(modules[n]):,}" for n in names))
    history_path = out / "history.json"
    history: dict[str, Any] = read_json(history_path) if history_path.exists() else {}
    started = time.time()
    last = [started, time.process_time()]

    def record(epoch: int, stats: dict) -> None:  # each epoch's own wall and CPU time: a resumed run adds up
        now = [time.time(), time.process_time()]
        spent = {"seconds": round(now[0] - started, 1), "epoch_s": round(now[0] - last[0], 1)}
        history[str(epoch)] = {**stats, **spent, "cpu_s": round(now[1] - last[1], 1)}
        last[:] = now
        write_json(history_path, history)

    brain = OnlineBrain(
        modules=modules,
        opt_class=lambda params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        hparams={
            "names": names,
            "online": online,
            "steps_per_epoch": len(sampler),
            "detokenize": lambda ids: tok.decode([int(i) for i in ids]),
            "seed": student.seed,
            "lr_at": lr_schedule(cfg, len(sampler)),
            "history": record,
        },
        run_opts={
            "device": distributed.local_device(ctx.device),
            "noprogressbar": not s.progress or not distributed.is_main(),
            "max_grad_norm": cfg.max_grad_norm,
            "distributed_backend": distributed.backend_for(ctx.device),
        },
        checkpointer=ckpt,
    )
    train_set = make_dataset(feats, tokens)
    brain.fit(
        counter,
        make_dataloader(train_set, batch_sampler=sampler) if distributed.active() else train_set,
        make_dataset(vfeats, valid),
        train_loader_kwargs={"batch_sampler": sampler},
        valid_loader_kwargs={"batch_size": cfg.batch_size},
    )
    if distributed.is_main():
        _save_bundles(ctx, specs, modules, ckpt, history)
    distributed.barrier()


def _save_bundles(ctx: Context, specs: Sequence, modules: dict, ckpt: AtomicCheckpointer, history: dict) -> None:
    """Each model at its own best epoch, as a bundle with its own validation curve."""
    exp = ctx.exp
    for sp in specs:
        best = ckpt.find_checkpoint(min_key=f"WER-{sp.name}")
        if best is None:
            raise RuntimeError(f"{exp.model_dir('online')}: training ended without a checkpoint")
        ckpt.load_checkpoint(best)
        model: CTCAcousticModel = modules[sp.name]
        model.to("cpu")
        folder = exp.model_dir(sp.name)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(
            exp.history_file(sp.name),
            {e: {"train_loss": h["train_loss"], "valid_wer": h["valid_wer"][sp.name]} for e, h in history.items()},
        )
        info = {
            "name": sp.name,
            "fingerprint": ctx.fingerprint(),
            "online": ctx.settings.online.to_dict(),
            "best_epoch": int(best.meta["epoch"]),
            "valid_wer": float(best.meta[f"WER-{sp.name}"]),
            "parameters": count_parameters(model),
            "train": ctx.settings.train.to_dict(),
            "seed": sp.seed,
        }
        save_bundle(exp.bundle(sp.name), model, exp.cmvn(), info, tokenizer_dir=exp.tokenizer_dir)
        log.info(f"{sp.name}: best epoch {best.meta['epoch']} (valid WER {100 * info['valid_wer']:.2f})")


def summarise_online(ctx: Context, scores: dict[str, dict]) -> dict[str, Any]:
    """The online run beside the two-pass one of the same experiment: WERs, the share of the
    online peers' ensemble gain that the online student recovers over its scratch twin, and
    the training compute (CPU seconds and wall seconds of the stages; two-pass: the teachers,
    the ensemble cache and student-kd)."""
    import statistics

    specs = ctx.plan.online
    peers, student = [m.name for m in specs[:-1]], specs[-1]
    markers = {m.stem.split("-", 1)[1]: read_json(m) for m in sorted(ctx.exp.stages.glob("*.done"))}
    two_pass = [f"teacher-{i}" for i in range(len(peers))] + ["ensemble", "student-kd"]

    def total(key: str, stages: Sequence[str]) -> float | None:
        values = [markers.get(s, {}).get(key) for s in stages]
        return round(sum(values), 1) if all(v is not None for v in values) else None

    def wer(name: str, key: str = "wer") -> float | None:
        return scores.get(name, {}).get(key)

    out: dict[str, Any] = {
        "peers": {p: wer(p) for p in peers},
        "peers_mean_wer": statistics.fmean(wer(p) or 0 for p in peers),
        "ensemble_wer": wer("online-ensemble"),
        "ensemble_beam_wer": wer("online-ensemble", "beam_wer"),
        "student": student.name,
        "student_wer": wer(student.name),
        "student_beam_wer": wer(student.name, "beam_wer"),
        "two_pass": {
            "teachers_mean_wer": statistics.fmean(wer(f"teacher-{i}") or 0 for i in range(len(peers))),
            "ensemble_wer": wer("ensemble"),
            "student_wer": wer("student-kd"),
            "student_beam_wer": wer("student-kd", "beam_wer"),
        },
        "cpu_s": {"online": _spent(ctx, "cpu_s") or total("cpu_s", ["online"]), "two_pass": total("cpu_s", two_pass)},
        "wall_s": {
            "online": _spent(ctx, "epoch_s") or total("wall_s", ["online"]),
            "two_pass": total("wall_s", two_pass),
        },
        "mutual_weight": ctx.settings.online.mutual_weight,
    }
    twin = wer(student.twin) if student.twin else None
    ens = out["ensemble_wer"]
    if twin is not None and ens is not None and out["student_wer"] is not None and twin != ens:
        out["scratch_wer"] = twin
        out["recovered"] = round((twin - out["student_wer"]) / (twin - ens), 4)
    return out


def _spent(ctx: Context, key: str) -> float | None:
    """The online training's time summed over its epochs (over every sitting of a resumed run;
    an epoch cut short by a kill is not counted), when its history records it."""
    path = ctx.exp.model_dir("online") / "history.json"
    epochs = list(read_json(path).values()) if path.exists() else []
    return round(sum(e[key] for e in epochs), 1) if epochs and all(key in e for e in epochs) else None


def render_online(r: dict[str, Any]) -> list[str]:
    """The report's Markdown section for :func:`summarise_online`'s record."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}"

    def sec(x: float | None) -> str:
        return "-" if x is None else f"{x / 60:.1f} min"

    t = r["two_pass"]
    lines = [
        "",
        f"## Online distillation (one pass; mutual weight {r['mutual_weight']:g})",
        "",
        "| | two-pass | online |",
        "|---|---|---|",
        f"| teachers / peers, mean WER | {pct(t['teachers_mean_wer'])} | {pct(r['peers_mean_wer'])} |",
        f"| their ensemble, WER | {pct(t['ensemble_wer'])} | {pct(r['ensemble_wer'])} |",
        f"| distilled student, WER | {pct(t['student_wer'])} | {pct(r['student_wer'])} |",
        f"| distilled student, beam+LM WER | {pct(t['student_beam_wer'])} | {pct(r['student_beam_wer'])} |",
        f"| training CPU time (teachers + cache + student) | {sec(r['cpu_s']['two_pass'])} | "
        f"{sec(r['cpu_s']['online'])} |",
        f"| training wall time, stages summed | {sec(r['wall_s']['two_pass'])} | {sec(r['wall_s']['online'])} |",
    ]
    if "recovered" in r:
        lines += [
            "",
            f"The online student recovers {100 * r['recovered']:.0f}% of the online ensemble's gain over its "
            f"scratch twin ({pct(r['scratch_wer'])}).",
        ]
    return lines
