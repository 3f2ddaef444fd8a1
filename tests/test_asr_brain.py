"""CTCBrain on a synthetic feature task: teachers learn, the cache feeds distillation by ID."""

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from torch import nn

from asr_kd.asr.brain import CTCBrain
from asr_kd.asr.checkpoint import AtomicCheckpointer
from asr_kd.asr.decode import greedy_decode
from asr_kd.asr.score import error_rates
from asr_kd.distill import CacheWriter, DistillationLoss, TeacherCache
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel

VOCAB = 6  # blank + 5 tokens
N_MELS = 16
PATTERNS = torch.randn(VOCAB, N_MELS, generator=torch.Generator().manual_seed(0)) * 2


def utterance(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features where each token holds a pattern for 8-16 frames, separated by silence."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g)
    frames = []
    for tok in tokens:
        frames.append(torch.zeros(int(torch.randint(4, 9, (1,), generator=g)), N_MELS))
        frames.append(PATTERNS[tok].repeat(int(torch.randint(8, 17, (1,), generator=g)), 1))
    frames.append(torch.zeros(6, N_MELS))
    feats = torch.cat(frames)
    return feats + 0.3 * torch.randn(feats.shape, generator=g), tokens


def dataset(seeds) -> DynamicItemDataset:
    ds = DynamicItemDataset({f"utt{s}": {"seed": s} for s in seeds})

    @sb.utils.data_pipeline.takes("seed")
    @sb.utils.data_pipeline.provides("feats", "tokens")
    def pipeline(seed):
        feats, tokens = utterance(seed)
        yield feats
        yield tokens

    ds.add_dynamic_item(pipeline)
    ds.set_output_keys(["id", "feats", "tokens"])
    return ds


class Identity(nn.Module):
    def forward(self, feats, lengths, augment=False):
        return feats


def detokenize(ids):
    return " ".join("abcde"[i - 1] for i in ids)


def make_brain(hidden: int, tmp_path, name: str, **hparams) -> CTCBrain:
    torch.manual_seed(0)
    model = CTCAcousticModel(AcousticConfig(num_classes=VOCAB, n_mels=N_MELS, hidden=hidden, conv_channels=4, layers=1))
    modules = {"model": model, "frontend": Identity()}
    ckpt = AtomicCheckpointer(tmp_path / name, recoverables={"model": model})
    return CTCBrain(
        modules=modules,
        opt_class=lambda p: torch.optim.Adam(p, lr=1e-2),
        hparams={"detokenize": detokenize, **hparams},
        run_opts={"device": "cpu", "noprogressbar": True},
        checkpointer=ckpt,
    )


@torch.no_grad()
def outputs(brain: CTCBrain, ds) -> dict:
    brain.modules.eval()
    out = {}
    for item in ds:
        logits, n = brain.modules.model(item["feats"][None], torch.tensor([len(item["feats"])]))
        out[item["id"]] = (logits[0, : int(n)].log_softmax(-1), item["tokens"])
    return out


def corpus_wer(brain, ds) -> float:
    outs = outputs(brain, ds)
    hyps = [detokenize(greedy_decode(lp[None], torch.tensor([len(lp)]))[0]) for lp, _ in outs.values()]
    refs = [detokenize(t.tolist()) for _, t in outs.values()]
    return error_rates(refs, hyps)["wer"]


@pytest.mark.slow
def test_teacher_learns_and_student_distils_from_the_cache_by_id(tmp_path):
    torch.set_num_threads(1)
    train, valid = dataset(range(96)), dataset(range(1000, 1024))
    loader = {"batch_size": 8}
    teacher = make_brain(32, tmp_path, "teacher")
    untrained_wer = corpus_wer(teacher, valid)
    teacher.fit(range(1, 16), train, valid, train_loader_kwargs=loader, valid_loader_kwargs=loader)
    teacher_wer = corpus_wer(teacher, valid)
    assert teacher_wer < 0.5 * untrained_wer, (untrained_wer, teacher_wer)
    best = teacher.checkpointer.find_checkpoint(min_key="WER")
    assert best is not None and best.meta["WER"] <= untrained_wer  # fractions, as every WER

    fingerprint = {"n_mels": N_MELS, "subsampling": 4}
    with CacheWriter(tmp_path / "cache", num_classes=VOCAB, k=4, fingerprint=fingerprint) as w:
        for utt, (lp, _) in outputs(teacher, train).items():
            w.add(utt, lp)
    cache = TeacherCache(tmp_path / "cache", fingerprint=fingerprint)
    assert set(cache.ids()) == {f"utt{s}" for s in range(96)}

    kd = DistillationLoss(temperature=1.0, hard_weight=0.5, soft_weight=1.0)
    student = make_brain(16, tmp_path, "student", kd=kd, teacher_cache=cache, blank_weight=0.5)
    student.fit(range(1, 16), train, valid, train_loader_kwargs=loader, valid_loader_kwargs=loader)
    student_wer = corpus_wer(student, valid)
    print(f"WER untrained {untrained_wer:.3f} teacher {teacher_wer:.3f} student {student_wer:.3f}")
    assert student_wer < 0.5 * untrained_wer, (untrained_wer, student_wer)


def test_cache_made_with_another_front_end_is_refused(tmp_path):
    train = dataset(range(8))
    with CacheWriter(tmp_path / "cache", num_classes=VOCAB, k=4) as w:
        for item in train:
            w.add(item["id"], torch.randn(3, VOCAB))  # wrong frame count
    kd = DistillationLoss(temperature=1.0)
    student = make_brain(8, tmp_path, "student", kd=kd, teacher_cache=TeacherCache(tmp_path / "cache", fingerprint={}))
    with pytest.raises(RuntimeError, match="share the front end"):
        student.fit(range(1, 2), train, None, train_loader_kwargs={"batch_size": 4})


def test_the_hint_term_reaches_the_layers_below_the_hooked_one_and_never_the_teacher():
    from asr_kd.asr.hints import Hints

    torch.manual_seed(0)
    cfg = AcousticConfig(num_classes=VOCAB, n_mels=N_MELS, hidden=8, conv_channels=2, packed=False, dropout=0.0)
    teacher = CTCAcousticModel(cfg)
    student = CTCAcousticModel(AcousticConfig(**{**cfg.to_dict(), "hidden": 4, "stack": 3}))
    hint = Hints(teacher, layer="encoder", weight=1.0).build(student)
    teacher.requires_grad_(True)  # the brain's no_grad alone must keep the teacher out of the graph
    assert hint.strides == [3] and hint.projections[0].out_features == 3 * 16  # 3 frames of 2 x 8 units
    batch = sb.dataio.batch.PaddedBatch([dataset([1])[0], dataset([2])[0]])

    def grads(brain):
        student.zero_grad()
        loss = brain.compute_objectives(brain.compute_forward(batch, sb.Stage.TRAIN), batch, sb.Stage.TRAIN)
        loss.backward()
        return {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    def brain(**hparams):
        modules = {"model": student, "frontend": Identity(), **({"hint": hint} if hparams else {})}
        return CTCBrain(modules=modules, hparams={"detokenize": detokenize, **hparams}, run_opts={"device": "cpu"})

    plain, hinted = grads(brain()), grads(brain(hint_teacher=teacher, hint_weight=1.0))
    changed = {n for n in plain if not torch.allclose(plain[n], hinted[n])}
    assert {n.split(".")[0] for n in changed} == {"subsample", "encoder"}  # the output layer: untouched
    assert all(p.grad is None for p in teacher.parameters()) and hint.projections[0].weight.grad is not None
    with pytest.raises(ValueError, match="no module 'decoder'"):
        Hints(teacher, layer="decoder").build(student)
    delayed = CTCAcousticModel(AcousticConfig(**{**cfg.to_dict(), "encoder": "lstm", "delay": 2}))
    with pytest.raises(ValueError, match="train the delayed"):
        Hints(teacher).build(delayed)


class MaskFrames(nn.Module):
    """A stand-in for SpecAugment: training batches lose frames 8-39."""

    def forward(self, feats, lengths, augment=False):
        return feats.index_fill(1, torch.arange(8, 40), 0.0) if augment else feats


def test_live_teachers_label_the_batch_the_student_sees(tmp_path):
    from asr_kd.asr.inference import ensemble_log_probs

    torch.manual_seed(0)
    cfg = AcousticConfig(num_classes=VOCAB, n_mels=N_MELS, hidden=8, conv_channels=2, packed=False, dropout=0.0)
    teachers = [CTCAcousticModel(cfg) for _ in range(2)]
    for t in teachers:  # confident teachers, so that the masked frames change their posteriors visibly
        t.output.weight.data.mul_(30)
    student = CTCAcousticModel(AcousticConfig(**{**cfg.to_dict(), "hidden": 4}))
    items = [dataset([1])[0], dataset([2])[0]]
    batch = sb.dataio.batch.PaddedBatch(items)
    kd = DistillationLoss(temperature=2.0, hard_weight=0.0, soft_weight=1.0)

    def dense_cache(name, frontend):  # every class kept: the cache holds the whole distribution
        with CacheWriter(tmp_path / name, num_classes=VOCAB, k=VOCAB, fingerprint={}) as w:
            for it in items:
                n = torch.tensor([len(it["feats"])])
                lp, out = ensemble_log_probs(teachers, frontend(it["feats"][None], n, augment=True), n)
                w.add(it["id"], lp[0, : int(out)])
        return TeacherCache(tmp_path / name, fingerprint={})

    def run(frontend, **hparams):
        hp = {"detokenize": detokenize, "kd": kd, **hparams}
        brain = CTCBrain(modules={"model": student, "frontend": frontend}, hparams=hp, run_opts={"device": "cpu"})
        return brain, brain.compute_objectives(brain.compute_forward(batch, sb.Stage.TRAIN), batch, sb.Stage.TRAIN)

    def loss(frontend, **hparams):
        return run(frontend, **hparams)[1]

    live = {"live_teachers": teachers, "live_method": "arithmetic"}
    clean, masked = dense_cache("clean", Identity()), dense_cache("masked", MaskFrames())
    same = {"rtol": 1e-3, "atol": 0.0}  # the cache holds float16
    # the same loss from live teachers as from a cache of the same features, clean or masked
    assert torch.allclose(loss(Identity(), **live), loss(Identity(), teacher_cache=clean), **same)
    brain, on_masked = run(MaskFrames(), **live)
    assert torch.allclose(on_masked, loss(MaskFrames(), teacher_cache=masked), **same)
    # the live targets are the members' posteriors of the masked features, far from the clean ones'
    feats, rel = batch.feats
    n = torch.round(rel * feats.shape[1]).long()
    by_hand, _ = ensemble_log_probs(teachers, MaskFrames()(feats, n, augment=True), n)
    clean_targets, _ = ensemble_log_probs(teachers, feats, n)
    assert torch.allclose(brain._live[0], by_hand) and (brain._live[0] - clean_targets).abs().max() > 0.5
    assert all(p.grad is None for t in teachers for p in t.parameters())
    with pytest.raises(RuntimeError, match="live teachers produced"):  # a member of another frame rate: refused
        loss(Identity(), live_teachers=[OneFrameShort(teachers[0])])


def test_live_mixup_teaches_mixes_of_two_utterances():
    from asr_kd.asr.brain import mix_batch
    from asr_kd.asr.inference import ensemble_log_probs

    torch.manual_seed(0)
    cfg = AcousticConfig(num_classes=VOCAB, n_mels=N_MELS, hidden=8, conv_channels=2, packed=False, dropout=0.0)
    teachers, student = [CTCAcousticModel(cfg) for _ in range(2)], CTCAcousticModel(cfg)
    batch = sb.dataio.batch.PaddedBatch([dataset([s])[0] for s in (1, 2, 3, 4)])
    kd = DistillationLoss(temperature=1.0, hard_weight=0.0, soft_weight=1.0)
    hp = {"detokenize": detokenize, "kd": kd, "live_teachers": teachers, "live_mixup": 1.0}
    brain = CTCBrain(modules={"model": student, "frontend": Identity()}, hparams=hp, run_opts={"device": "cpu"})
    torch.manual_seed(7)
    logits, out_lengths = brain.compute_forward(batch, sb.Stage.TRAIN)
    feats, rel = batch.feats
    n = torch.round(rel * feats.shape[1]).long()
    torch.manual_seed(7)
    mixed, n_mixed = mix_batch(feats, n, 1.0)
    by_hand, n_out = ensemble_log_probs(teachers, mixed, n_mixed)
    assert torch.allclose(brain._live[0], by_hand) and torch.equal(out_lengths, n_out)  # the members label the mix
    assert not torch.allclose(mixed, feats) and torch.equal(n_mixed >= n, torch.ones_like(n, dtype=torch.bool))
    clean, _ = ensemble_log_probs(teachers, feats, n)
    assert (by_hand[:, : clean.shape[1]] - clean).abs().max() > 0.1  # not the clean batch's targets
    loss = brain.compute_objectives((logits, out_lengths), batch, sb.Stage.TRAIN)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for t in teachers for p in t.parameters())
    # each mix is a convex combination of two utterances of the batch, padding counted as zeros
    x = torch.stack([torch.full((5, 2), 1.0), torch.full((5, 2), 3.0)])
    m, k = mix_batch(x, torch.tensor([5, 3]), alpha=0.5)
    assert bool(((m >= 0) & (m <= 3 + 1e-5)).all()) and k.tolist() in ([5, 3], [5, 5])


class OneFrameShort(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, feats, lengths):
        logits, n = self.model(feats, lengths)
        return logits[:, :-1], n - 1
