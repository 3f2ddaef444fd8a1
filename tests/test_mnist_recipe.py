"""The MNIST recipe: idx reader, jitter, max-norm, bias tuning, config, and a smoke run.

The smoke run trains a small teacher and students on a 4,000-image subset of the
real MNIST (``../shared/data/mnist`` next to the repository); it is skipped only
when those files are absent.
"""

import gzip
import json
import struct

import pytest
import torch

from asr_kd.distill import DistillationLoss
from asr_kd.image.config import RecipeError, canonical_spec, default_config_path, load_config
from asr_kd.image.mnist import MnistNotFound, default_data_dir, jitter, load_raw, read_idx
from asr_kd.image.recipe import Recipe
from asr_kd.image.train import TrainConfig, make_optimizer, train, tune_bias
from asr_kd.models.mlp import MLP, apply_max_norm

HAVE_MNIST = (default_data_dir() / "train-images-idx3-ubyte.gz").exists()


def _write_idx(path, arr: torch.Tensor) -> None:
    header = struct.pack(">HBB", 0, 8, arr.dim()) + struct.pack(">" + "I" * arr.dim(), *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(arr.flatten().tolist()))


def test_read_idx_round_trip(tmp_path):
    arr = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    _write_idx(tmp_path / "x-idx3-ubyte.gz", arr)
    assert torch.equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), arr)


def test_read_idx_refuses_truncated_and_foreign(tmp_path):
    p = tmp_path / "bad.gz"
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 10) + bytes(3))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)
    with gzip.open(p, "wb") as f:
        f.write(b"PK\x03\x04" + bytes(10))
    with pytest.raises(ValueError, match="not an unsigned-byte idx"):
        read_idx(p)


def test_missing_data_dir_names_path_and_fix(tmp_path):
    with pytest.raises(MnistNotFound) as err:
        load_raw(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "--data-dir" in str(err.value)
    with pytest.raises(MnistNotFound, match="train-images-idx3-ubyte"):
        load_raw(tmp_path)  # exists, but empty


def test_jitter_shifts_without_wrapping():
    img = torch.zeros(28, 28)
    img[10:14, 10:14] = 1.0  # a 4x4 square well inside the frame
    x = img.flatten().repeat(500, 1)
    y = jitter(x, max_shift=2, generator=torch.Generator().manual_seed(0)).view(500, 28, 28)
    assert torch.all(y.sum((1, 2)) == 16)  # the square moved, never cut
    rows = y.sum(2).nonzero()[:, 1].view(500, 4)[:, 0] - 10
    cols = y.sum(1).nonzero()[:, 1].view(500, 4)[:, 0] - 10
    assert set(rows.tolist()) == set(range(-2, 3)) == set(cols.tolist())  # every shift in [-2, 2]
    corner = torch.zeros(28, 28)
    corner[0, 0] = 1.0
    z = jitter(corner.flatten().repeat(200, 1), 2, torch.Generator().manual_seed(1))
    assert z[:, -1].sum() == 0  # pixels leaving the frame are dropped, not wrapped around
    assert 0 < z.sum() < 200


def test_max_norm_caps_each_unit():
    net = MLP([20, 8, 3], dropout_input=0.2, dropout_hidden=0.5)
    with torch.no_grad():
        net.layers[0].weight.mul_(50)
        small = net.layers[1].weight.clone() * 0 + 0.01
        net.layers[1].weight.copy_(small)
    apply_max_norm(net, 2.0)
    assert torch.allclose(net.layers[0].weight.norm(dim=1), torch.full((8,), 2.0), atol=1e-5)
    assert torch.equal(net.layers[1].weight, small)  # already within the cap: untouched


def test_tune_bias_minimises_validation_errors_and_prefers_small_shifts():
    logits = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.5, 0.0], [0.0, 0.5, 0.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([1, 1, 2, 0])
    shift, info = tune_bias(logits, y, classes=[2], grid=[0.0, 0.25, 0.75, 1.5, 3.0])
    assert shift == 0.75  # fixes example 2 without breaking examples 0 or 1
    assert info == {"val_errors_before": 1, "val_errors_after": 0}


def test_sgd_momentum_is_damped_so_the_step_does_not_grow_with_momentum():
    # Constant gradient c: with v = m v + (1 - m) g the step stays lr * c for any m
    # (undamped momentum would grow it towards lr * c / (1 - m) = 10 lr * c here).
    c = torch.tensor([1.0, -2.0, 0.5])
    net = torch.nn.Linear(3, 1, bias=False)
    w0 = net.weight.detach().clone()
    opt = make_optimizer(net, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9))
    for _ in range(5):
        opt.zero_grad()
        (net.weight * c).sum().backward()
        opt.step()
    assert torch.allclose(net.weight.detach(), w0 - 5 * 0.1 * c, atol=1e-6)
    cfg = TrainConfig(optimizer="sgd", momentum=0.5, momentum_final=0.99, momentum_epochs=4)
    assert [cfg.momentum_at(s, 10) for s in (0, 20, 40, 400)] == pytest.approx([0.5, 0.745, 0.99, 0.99])
    assert TrainConfig(optimizer="sgd", momentum=0.7).momentum_at(1000, 10) == 0.7  # no ramp
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="momenta"):
        TrainConfig(optimizer="sgd", momentum_final=1.0)


def test_train_with_sgd_ramp_and_an_online_teacher():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 784, generator=g)
    y = (x[:, :392].sum(1) > x[:, 392:].sum(1)).long()
    teacher = MLP([784, 32, 10])
    cfg = TrainConfig(epochs=3, lr=0.5, batch_size=50, optimizer="sgd", momentum_epochs=2, jitter=1, progress=False)
    run = train(MLP([784, 16, 10]), x, y, (x, y), cfg, seed=0)
    assert run.history["loss"][-1] < run.history["loss"][0]
    kd = DistillationLoss(temperature=4.0, hard_weight=0.0, soft_weight=1.0)
    run = train(MLP([784, 16, 10]), x, y, (x, y), cfg, seed=0, distill=kd, teacher=teacher)
    assert run.history["loss"][-1] < run.history["loss"][0]
    with pytest.raises(ValueError, match="exactly one"):
        train(MLP([784, 16, 10]), x, y, (x, y), cfg, 0, teacher_logits=teacher(x), distill=kd, teacher=teacher)
    with pytest.raises(ValueError, match="without a distill loss"):
        train(MLP([784, 16, 10]), x, y, (x, y), cfg, 0, teacher=teacher)


def test_training_killed_mid_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    import asr_kd.image.train as image_train

    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 784, generator=g)
    y = (x[:, :392].sum(1) > x[:, 392:].sum(1)).long()
    cfg = TrainConfig(epochs=4, lr=1e-2, batch_size=50, jitter=1, progress=False)

    def fresh():  # dropout and jitter draw from the streams the checkpoint must restore
        torch.manual_seed(1)
        return MLP([784, 32, 10], dropout_input=0.2, dropout_hidden=0.5)

    whole = fresh()
    ref = train(whole, x, y, (x, y), cfg, seed=3)

    real_count, calls = image_train.count_errors, []

    def killed_after_two_epochs(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed in epoch 3")
        return real_count(*args, **kwargs)

    ckpt = tmp_path / "run.ckpt"
    monkeypatch.setattr(image_train, "count_errors", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), x, y, (x, y), cfg, seed=3, checkpoint=ckpt)
    monkeypatch.setattr(image_train, "count_errors", real_count)
    assert len(torch.load(ckpt, weights_only=False)["history"]["loss"]) == 2
    resumed = MLP([784, 32, 10], dropout_input=0.2, dropout_hidden=0.5)  # weights come from the checkpoint
    run = train(resumed, x, y, (x, y), cfg, seed=3, checkpoint=ckpt)
    assert run.history == ref.history and run.best_epoch == ref.best_epoch
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="other settings"):
        train(MLP([784, 32, 10]), x, y, (x, y), TrainConfig(epochs=5, progress=False), seed=3, checkpoint=ckpt)


def test_device_setting_is_checked():
    assert load_config(default_config_path(), "main")["device"] == "cpu"
    with pytest.raises(RecipeError, match="device must be"):
        load_config(default_config_path(), "main", ["device=tpu"])
    if not torch.cuda.is_available():
        with pytest.raises(RecipeError, match="no CUDA GPU"):
            load_config(default_config_path(), "paper")


def test_canonical_spec_keeps_old_models_loadable_and_tells_optimizers_apart():
    old = {"sizes": [784, 10], "lr": 1e-3, "epochs": 40}  # saved before optimizer/momenta existed
    new = {**old, "optimizer": "adam", "momentum": 0.5, "momentum_final": 0.99, "momentum_epochs": 0}
    assert canonical_spec(old) == canonical_spec(new)
    assert canonical_spec({**new, "optimizer": "sgd"}) != canonical_spec(old)
    assert canonical_spec({**new, "optimizer": "sgd"}) != canonical_spec({**new, "optimizer": "sgd", "momentum": 0.6})
    assert canonical_spec({**old, "transfer_jitter": 2}) != canonical_spec(old)


def test_config_presets_and_overrides():
    main = load_config(default_config_path(), "main")
    assert main["teacher"]["sizes"] == [784, 1200, 1200, 10]
    assert main["student"]["sizes"] == [784, 800, 800, 10]
    assert main["sweep"]["temperatures"] == [1, 2, 2.5, 3, 4, 8, 20]
    # the sweep and transfer experiments share the short schedule's teacher and run folder
    short = load_config(default_config_path(), "short")
    assert short["teacher"]["epochs"] < main["teacher"]["epochs"]
    for preset in ("sweep", "transfer", "full"):
        cfg = load_config(default_config_path(), preset)
        assert (cfg["teacher"], cfg["student"], cfg["out_dir"]) == (
            short["teacher"],
            short["student"],
            short["out_dir"],
        )
    smoke = load_config(default_config_path(), "smoke", ["student.epochs=2"])
    assert smoke["student"]["epochs"] == 2 and smoke["teacher"]["max_norm"] == 3.5  # inherited from base
    # a section as the value merges: the preset's other keys of that section stay
    section = load_config(default_config_path(), "smoke", ["student={epochs: 2}"])
    assert section["student"] == {**load_config(default_config_path(), "smoke")["student"], "epochs": 2}
    with pytest.raises(RecipeError, match="unknown key"):
        load_config(default_config_path(), "main", ["student.epoch=2"])
    with pytest.raises(RecipeError, match="no preset"):
        load_config(default_config_path(), "huge")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST idx files not found in {default_data_dir()}")
def test_smoke_recipe_distils_and_resumes(tmp_path):
    torch.set_num_threads(1)
    cfg = load_config(default_config_path(), "smoke")
    # its wall time is measured by `python tools/bench_mnist.py`, not asserted here
    recipe = Recipe(cfg, seed=0, data_dir=None, out_dir=tmp_path, progress=False)
    records = {r["name"]: r for r in recipe.run()}

    n = records["teacher"]["test_n"]
    distilled = records["student128-soft-T20"]
    # Chance is 90% errors; a working distilled student on 4k images stays under 25%.
    assert distilled["test_errors"] < 0.25 * n
    assert distilled["loss_history"][-1] < 0.5 * distilled["loss_history"][0]
    assert records["teacher"]["test_errors"] < 0.25 * n
    assert records["student128-hard"]["test_errors"] < 0.25 * n
    jittered = records["student128-soft-T20-jitter1"]  # distilled on shifted transfer images
    assert jittered["test_errors"] < 0.25 * n
    assert jittered["loss_history"][-1] < 0.5 * jittered["loss_history"][0]

    omit = records["student128-omit3-T20"]
    assert omit["transfer_size"] < 4000 and omit["test_3s"] > 100
    assert omit["bias_shift"] > 0  # 3s were never targets: their bias must go up
    assert omit["bias_tuning"]["val_errors_after"] <= omit["bias_tuning"]["val_errors_before"]
    assert omit["test_errors_on_3s_adjusted"] < omit["test_errors_on_3s"]

    saved = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert {r["name"] for r in saved} == set(records)

    # Rerunning resumes: every model is loaded, not retrained (no model file is rewritten), and
    # scores the same.
    models = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    assert models
    again = {r["name"]: r for r in Recipe(cfg, 0, None, tmp_path, progress=False).run()}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == models
    assert {k: r["test_errors"] for k, r in again.items()} == {k: r["test_errors"] for k, r in records.items()}


@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST idx files not found in {default_data_dir()}")
def test_refuses_model_trained_with_other_config(tmp_path):
    cfg = load_config(default_config_path(), "smoke", ["teacher.epochs=1"])
    Recipe(cfg, 0, None, tmp_path, progress=False).run(["teacher"])
    other = load_config(default_config_path(), "smoke", ["teacher.epochs=2"])
    with pytest.raises(RecipeError, match="another configuration"):
        Recipe(other, 0, None, tmp_path, progress=False).run(["teacher"])
    sgd = load_config(default_config_path(), "smoke", ["teacher.epochs=1", "teacher.optimizer=sgd"])
    with pytest.raises(RecipeError, match="another configuration"):
        Recipe(sgd, 0, None, tmp_path, progress=False).run(["teacher"])
    # a model saved before the optimizer setting existed still loads under the default (Adam)
    path = tmp_path / "seed0" / "teacher.pt"
    payload = torch.load(path, weights_only=False)
    for key in ("optimizer", "momentum", "momentum_final", "momentum_epochs"):
        payload["spec"].pop(key)
    torch.save(payload, path)
    assert Recipe(cfg, 0, None, tmp_path, progress=False).run(["teacher"])[0]["name"] == "teacher"


@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST idx files not found in {default_data_dir()}")
def test_main_trains_only_the_chosen_student_variants(tmp_path):
    torch.set_num_threads(1)
    quick = ["teacher.epochs=1", "student.epochs=1", "data.train_limit=1000", "data.test_limit=200"]
    quick.append("distill.transfer_jitter=0")
    cfg = load_config(default_config_path(), "smoke", [*quick, "distill.variants=[soft]"])
    records = Recipe(cfg, 0, None, tmp_path, progress=False).run(["main"])
    assert [r["name"] for r in records] == ["teacher", "student128-soft-T20"]
    assert sorted(p.name for p in (tmp_path / "seed0").glob("*.pt")) == ["student128-soft-T20.pt", "teacher.pt"]
    bad = load_config(default_config_path(), "smoke", [*quick, "distill.variants=[soft, medium]"])
    with pytest.raises(RecipeError, match=r"distill.variants: unknown \['medium'\]"):
        Recipe(bad, 0, None, tmp_path, progress=False).run(["main"])
    # the validation images join the transfer set of a soft-target student, which keeps its last epoch
    both = load_config(
        default_config_path(),
        "smoke",
        [*quick, "student.epochs=3", "distill.variants=[soft]", "distill.transfer_set=train+val"],
    )
    recipe = Recipe(both, 0, None, tmp_path, progress=False)
    record = recipe.run(["main"])[-1]
    assert record["name"] == "student128-soft-T20-trainval"
    assert record["transfer_size"] == len(recipe.data.train_y) + len(recipe.data.val_y)
    assert record["best_epoch"] == 2 and record["val_errors"] == record["val_history"][-1]
    saved = torch.load(tmp_path / "seed0" / "student128-soft-T20-trainval.pt", weights_only=False)
    assert saved["spec"]["transfer_set"] == "train+val" and saved["spec"]["select"] == "last"
    with_labels = load_config(default_config_path(), "smoke", [*quick, "distill.transfer_set=train+val"])
    with pytest.raises(RecipeError, match="validation labels must stay unseen"):
        Recipe(with_labels, 0, None, tmp_path, progress=False).run(["main"])


@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST idx files not found in {default_data_dir()}")
def test_teacher_trains_on_the_validation_images_too_when_asked(tmp_path):
    torch.set_num_threads(1)
    quick = ["teacher.epochs=3", "data.train_limit=1000", "data.test_limit=200", "teacher.train_set=train+val"]
    recipe = Recipe(load_config(default_config_path(), "smoke", quick), 0, None, tmp_path, progress=False)
    record = recipe.run(["teacher"])[0]
    assert record["transfer_size"] == len(recipe.data.train_y) + len(recipe.data.val_y)
    assert record["best_epoch"] == 2 and record["val_errors"] == record["val_history"][-1]
    saved = torch.load(tmp_path / "seed0" / "teacher.pt", weights_only=False)
    assert saved["spec"]["train_set"] == "train+val" and saved["spec"]["select"] == "last"
    # the teacher of the 50,000 images is another model: refused, not silently reused
    plain = load_config(default_config_path(), "smoke", quick[:-1])
    with pytest.raises(RecipeError, match="another configuration"):
        Recipe(plain, 0, None, tmp_path, progress=False).run(["teacher"])
    bad = load_config(default_config_path(), "smoke", [*quick[:-1], "teacher.train_set=all"])
    with pytest.raises(RecipeError, match="teacher.train_set must be 'train' or 'train\\+val', got 'all'"):
        Recipe(bad, 0, None, tmp_path / "bad", progress=False).run(["teacher"])


def test_cli_missing_data_dir_exits_2_with_the_fix(tmp_path, capsys):
    from asr_kd.image.cli import main

    code = main(["--preset", "smoke", "--data-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "none") in err and "--data-dir" in err


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST idx files not found in {default_data_dir()}")
def test_ensemble_experiment_combines_seed_teachers(tmp_path):
    torch.set_num_threads(1)
    cfg = load_config(default_config_path(), "smoke", ["teacher.epochs=4", "ensemble.seeds=[0, 1]"])
    for seed in (0, 1):
        Recipe(cfg, seed=seed, data_dir=None, out_dir=tmp_path, progress=False).run(["teacher"])
    recipe = Recipe(cfg, seed=0, data_dir=None, out_dir=tmp_path, progress=False)
    records = {r["name"]: r for r in recipe.run(["ensemble"])}

    # geometric mean of the members = softmax of their mean logits
    members = [recipe._load("teacher", dict(cfg["teacher"]), tmp_path / f"seed{s}")[0] for s in (0, 1)]
    x = recipe.data.test_x[:50]
    with torch.no_grad():
        mean_logits = torch.stack([m.eval()(x) for m in members]).mean(0)
    torch.testing.assert_close(recipe.ensemble_log_probs(x), mean_logits.log_softmax(-1), atol=1e-5, rtol=1e-5)

    n = records["teacher-ens2"]["test_n"]
    assert records["teacher-ens2"]["members"] == [0, 1] and records["teacher-ens2"]["test_errors"] < 0.25 * n
    student = records["student128-soft-T20-ens2"]
    assert student["test_errors"] < 0.25 * n and student["loss_history"][-1] < student["loss_history"][0]
    saved = torch.load(tmp_path / "seed0" / "student128-soft-T20-ens2.pt", weights_only=False)
    assert saved["spec"]["teacher_ensemble"] == [0, 1]

    missing = load_config(default_config_path(), "smoke", ["teacher.epochs=4", "ensemble.seeds=[0, 5]"])
    with pytest.raises(RecipeError, match=r"seed5/teacher.pt: no teacher for seed 5"):
        Recipe(missing, seed=0, data_dir=None, out_dir=tmp_path, progress=False).run(["ensemble"])
    with pytest.raises(RecipeError, match="ensemble.method"):
        load_config(default_config_path(), "smoke", ["ensemble.method=median"])


def _online_pair(seed: int = 0):
    from asr_kd.models.mlp import MLP

    torch.manual_seed(seed)
    return MLP([784, 48, 10], 0.2, 0.5), MLP([784, 24, 10])


def test_online_teacher_and_student_resume_exactly_after_a_kill(tmp_path, monkeypatch):
    from asr_kd.distill import DistillationLoss
    from asr_kd.distill.online import OnlineDistillation
    from asr_kd.image import online as online_mod
    from asr_kd.image.train import TrainConfig

    torch.manual_seed(1)
    x, y = torch.rand(96, 784), torch.randint(0, 10, (96,))
    t_cfg = TrainConfig(epochs=3, batch_size=32, jitter=1, max_norm=3.5, progress=False)
    s_cfg = TrainConfig(epochs=3, batch_size=32, lr=2e-3, progress=False)
    online = OnlineDistillation(DistillationLoss(temperature=20.0, hard_weight=0.0, soft_weight=1.0), burn_in=3)

    def run(ckpt):
        teacher, student = _online_pair()
        runs = online_mod.train_together(teacher, student, x, y, (x, y), t_cfg, s_cfg, 7, online, ckpt)
        return teacher, student, runs

    t_ref, s_ref, (rt, rs) = run(tmp_path / "a.ckpt")
    assert len(rt.history["val_errors"]) == len(rs.history["val_errors"]) == 3
    real, saves = online_mod._save, []

    def killed_after_two_epochs(path, state):
        real(path, state)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(online_mod, "_save", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.ckpt")
    monkeypatch.undo()
    t_b, s_b, (bt, bs) = run(tmp_path / "b.ckpt")  # resumes at epoch 3
    for a, b in ((t_ref, t_b), (s_ref, s_b)):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
    assert bt.history == rt.history and bs.history == rs.history


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST idx files not found in {default_data_dir()}")
def test_smoke_online_experiment_trains_both_and_scores_them(tmp_path):
    torch.set_num_threads(1)
    cfg = load_config(default_config_path(), "smoke", ["experiments=[online]", "online.burn_in=0.5"])
    records = {r["name"]: r for r in Recipe(cfg, seed=0, data_dir=None, out_dir=tmp_path, progress=False).run()}
    assert set(records) == {"online-teacher", "online-student128-soft-T20"}
    n = records["online-teacher"]["test_n"]
    for r in records.values():
        assert r["experiment"] == "online" and r["test_errors"] < 0.25 * n and r["epochs"] == 6
    assert "(from step" in records["online-student128-soft-T20"]["formula"]
    assert not (tmp_path / "seed0" / "checkpoints" / "online").exists()
