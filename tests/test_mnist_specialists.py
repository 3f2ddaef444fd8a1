"""The MNIST recipe's specialists: starting weights, dustbin shift, Table 4, a smoke run that resumes.

The smoke run uses a 4,000-image subset of the real MNIST (``../shared/data/mnist``) and is
skipped only when those files are absent.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from asr_kd.distill.specialists import dustbin_shift, specialist_labels, table4
from asr_kd.image.config import RecipeError, default_config_path, load_config
from asr_kd.image.mnist import default_data_dir
from asr_kd.image.recipe import Recipe
from asr_kd.image.report import write_report
from asr_kd.image.specialists import class_subsets, specialist_init, train_specialists
from asr_kd.models.mlp import MLP

HAVE_MNIST = (default_data_dir() / "train-images-idx3-ubyte.gz").exists()


def test_a_specialist_starts_as_the_generalist_on_its_subset():
    torch.manual_seed(0)
    generalist = MLP([20, 16, 16, 10])
    subset = [2, 5, 7]
    specialist = MLP([20, 16, 16, 4])
    specialist.load_state_dict(specialist_init(generalist, subset))
    x = torch.randn(8, 20)
    with torch.no_grad():
        g, s = generalist(x), specialist(x)
    torch.testing.assert_close(s[:, :3], g[:, subset])
    outside = [c for c in range(10) if c not in subset]
    # the dustbin is the log-sum-exp of the outside logits where those are equal: mean + log(7)
    torch.testing.assert_close(s[:, 3], g[:, outside].mean(1) + math.log(7), atol=1e-5, rtol=1e-5)
    with pytest.raises(RecipeError, match="keeps every class"):
        specialist_init(generalist, list(range(10)))


class _FitRecorder:
    """A stand-in for the recipe: records what each specialist would be trained from."""

    seed, device = 0, torch.device("cpu")

    def __init__(self, init: str):
        self.cfg = {"teacher": {"sizes": [20, 16, 10]}, "specialists": {"init": init, "epochs": 1, "lr": 1e-3}}
        y = torch.arange(40) % 10
        self.data = SimpleNamespace(train_x=torch.randn(40, 20), train_y=y, val_x=torch.randn(10, 20), val_y=y[:10])
        self.calls: list[tuple[dict, dict | None]] = []

    def fit(self, name, spec, x, y, init=None, val=None):
        self.calls.append((spec, init))
        return MLP(spec["sizes"]), {}

    def log(self, msg):
        pass


def test_specialists_start_from_the_generalist_or_from_scratch():
    generalist = MLP([20, 16, 10])
    paper, scratch = _FitRecorder("generalist"), _FitRecorder("scratch")
    train_specialists(paper, generalist, [[2, 5], [3, 8, 9]])
    train_specialists(scratch, generalist, [[2, 5], [3, 8, 9]])
    for (spec, init), subset in zip(paper.calls, [[2, 5], [3, 8, 9]], strict=True):
        assert spec["init"] == "generalist" and spec["sizes"] == [20, 16, len(subset) + 1]
        for k, v in specialist_init(generalist, subset).items():
            torch.testing.assert_close(init[k], v)
    assert [(spec["init"], init) for spec, init in scratch.calls] == [("scratch", None)] * 2
    assert [s["dustbin_shift"] for s, _ in scratch.calls] == [s["dustbin_shift"] for s, _ in paper.calls]
    with pytest.raises(RecipeError, match="specialists.init"):
        train_specialists(_FitRecorder("random"), generalist, [[2, 5]])


def test_subsets_from_several_clusterings_drop_repeats_and_trivial_ones():
    torch.manual_seed(1)
    probs = torch.softmax(torch.randn(300, 6) * 3, -1)
    subsets = class_subsets(probs, [2, 3, 3])
    assert len(subsets) == len({tuple(s) for s in subsets})
    assert all(1 < len(s) < 6 for s in subsets)
    with pytest.raises(RecipeError, match="no subset of 2 or more"):
        class_subsets(probs, [1])


def test_table4_counts_covering_specialists_per_case():
    y = torch.tensor([0, 1, 2, 3])
    gen = torch.log_softmax(torch.eye(4)[[1, 1, 2, 0]] * 5, -1)  # right on cases 1 and 2
    comb = torch.log_softmax(torch.eye(4)[[0, 1, 2, 0]] * 5, -1)  # and on case 0
    subsets = [[0, 1], [0, 1, 2], [2, 3]]
    active = torch.tensor([[True, True, False], [True, False, False], [False, True, True], [True, True, False]])
    rows = {r["covering"]: r for r in table4(gen.argmax(-1), comb.argmax(-1), active, subsets, y)}
    assert {c: r["cases"] for c, r in rows.items()} == {0: 1, 1: 1, 2: 2}
    assert rows[2]["generalist_correct"] == 1 and rows[2]["combined_correct"] == 2
    assert rows[2]["correct_gain"] == 1 and rows[2]["relative_accuracy_change"] == 1.0
    assert rows[0]["relative_accuracy_change"] is None  # case 3: class 3 covered by no active one


@pytest.mark.skipif(not HAVE_MNIST, reason="MNIST idx files not found (../shared/data/mnist)")
def test_smoke_specialists_train_combine_distil_and_resume(tmp_path):
    torch.set_num_threads(1)
    sets = ["experiments=[specialists]", "specialists.clusters=[2]", "specialists.students=[student]"]
    cfg = load_config(default_config_path(), "smoke", sets)
    recipe = Recipe(cfg, seed=0, data_dir=None, out_dir=tmp_path, progress=False)
    records = {r["name"]: r for r in recipe.run()}
    combo = records["generalist+specialists"]
    subsets = combo["subsets"]
    assert sorted(c for s in subsets for c in s) == list(range(10))  # one K-means: a partition
    assert combo["generalist_test_errors"] == records["teacher"]["test_errors"]
    assert sum(r["cases"] for r in combo["table4"]) == combo["test_n"]
    assert combo["test_errors"] < 0.3 * combo["test_n"] and combo["ms_per_case"]["combination"] > 0

    labels = recipe.data.train_y
    for subset in subsets:
        saved = torch.load(tmp_path / "seed0" / f"specialist-c{''.join(map(str, subset))}.pt", weights_only=False)
        spec = saved["spec"]
        assert spec["sizes"][-1] == len(subset) + 1 and spec["subset"] == subset
        natural = float(torch.isin(labels, torch.tensor(subset)).float().mean())
        n = len(labels)
        sampled = (n // 2 + (n - n // 2) * natural) / n
        assert spec["dustbin_shift"] == pytest.approx(dustbin_shift(natural, sampled), abs=1e-5)
        assert specialist_labels(torch.arange(10), subset, 10).tolist() == [
            subset.index(c) if c in subset else len(subset) for c in range(10)
        ]
    for source in ("gen", "spec"):
        student = records[f"student128-soft-T20-{source}"]
        assert student["experiment"] == "specialists" and student["test_errors"] < 0.3 * student["test_n"]

    again = Recipe(cfg, seed=0, data_dir=None, out_dir=tmp_path, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "seed0").glob("*.pt")}
    records2 = {r["name"]: r for r in again.run()}
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "seed0").glob("*.pt")} == before  # nothing retrained
    assert records2["generalist+specialists"]["test_errors"] == combo["test_errors"]
    tables = (write_report(tmp_path / "results.json", tmp_path / "report")[0]).read_text()
    assert "active specialists covering the true class" in tables and "share of the combination's gain" in tables
    assert "Each specialist at its own task" in tables and len(combo["own_space"]) == len(subsets)
