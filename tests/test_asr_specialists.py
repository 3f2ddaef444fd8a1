"""Frame-level specialists for CTC (stage ``specialists``): targets, starting weights, the
combination as a system, the plan, and a tiny end-to-end run that resumes."""

import json

import pytest
import torch

from asr_kd.asr.inference import SpecialistSystem
from asr_kd.asr.recipe import AsrRecipe, default_config_path, load_asr_config
from asr_kd.asr.settings import AsrSettings
from asr_kd.asr.specialists import (
    specialist_init,
    specialist_targets,
    specialist_texts,
    subset_draw,
    target_dustbin_shift,
)
from asr_kd.asr.specs import SPECIALISTS, plan
from asr_kd.cli import main
from asr_kd.config import ConfigError
from asr_kd.data.features import FeatureNorm, GlobalCMVN
from asr_kd.distill import TeacherCache
from asr_kd.distill.specialists import collapse_to_specialist
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
from asr_kd.models.bundle import LoadedModel

CONFIG = str(default_config_path("synth_en"))


def test_targets_map_the_subset_and_merge_runs_of_other_pieces_into_one_dustbin():
    assert specialist_targets([4, 9, 9, 2, 4, 6, 7], [4, 2]) == [1, 3, 2, 1, 3]
    assert specialist_targets([9, 8], [4, 2]) == [3]  # an utterance of outside pieces: one dustbin
    assert 0 not in specialist_targets([5, 1, 2, 3], [1, 2])  # blank (0) is never a target
    # dustbin "piece": one dustbin token per outside piece, as the generalist spikes once per piece
    assert specialist_targets([4, 9, 9, 2, 4, 6, 7], [4, 2], dustbin="piece") == [1, 3, 3, 2, 1, 3, 3]


def test_half_from_subset_sampling_keeps_every_subset_utterance_and_raises_the_dustbin():
    tokens = {f"u{i}": ([7] if i % 10 == 0 else []) + [1, 2, 3] for i in range(100)}  # 10 hold piece 7
    chosen = subset_draw(tokens, [7], 0.5, seed=3)
    mine = [u for u in tokens if 7 in tokens[u]]
    assert set(mine) <= set(chosen) and len(chosen) == 20 and chosen == subset_draw(tokens, [7], 0.5, seed=3)
    assert chosen != subset_draw(tokens, [7], 0.5, seed=4)  # another seed, other utterances of the rest
    assert subset_draw(tokens, [7], 0.0) == sorted(tokens)  # natural sampling
    assert subset_draw(tokens, [1], 0.5) == sorted(tokens)  # the subset's utterances are already half or more
    targets = {u: specialist_targets(t, [7], dustbin="piece") for u, t in tokens.items()}
    shift = target_dustbin_shift(targets, chosen, dustbin=2)
    # the subset's share of the targets: 10 of 310 in the corpus, 10 of 70 in the draw
    assert shift == pytest.approx(float(torch.log(torch.tensor((10 / 70) * (300 / 310) / ((10 / 310) * (60 / 70))))))
    assert target_dustbin_shift(targets, sorted(tokens), dustbin=2) == 0.0


def _model(classes: int, seed: int = 0) -> CTCAcousticModel:
    torch.manual_seed(seed)
    return CTCAcousticModel(AcousticConfig(num_classes=classes, n_mels=8, hidden=8, conv_channels=2))


def _loaded(model: CTCAcousticModel) -> LoadedModel:
    return LoadedModel(model.eval(), FeatureNorm(GlobalCMVN(8), augment=None), {}, {})


def test_a_specialist_starts_as_the_generalist_on_blank_and_its_subset():
    generalist = _model(10)
    subset = [3, 4, 8]
    specialist = _model(len(subset) + 2, seed=1)
    specialist.load_state_dict(specialist_init(generalist.state_dict(), subset))
    x, n = torch.randn(2, 40, 8), torch.tensor([40, 33])
    with torch.no_grad():
        g, s = generalist.eval()(x, n)[0], specialist.eval()(x, n)[0]
    # the model's outputs are log-softmaxed: compare logits up to each frame's constant
    diff = s[..., :4] - g[..., [0, *subset]]
    torch.testing.assert_close(diff, diff[..., :1].expand_as(diff), atol=1e-5, rtol=0)


def test_the_combination_keeps_the_generalist_where_no_specialist_is_active():
    generalist, subset = _model(6), [4, 5]
    members = [_loaded(generalist), _loaded(_model(4, seed=2))]
    x, n = torch.randn(2, 48, 8), torch.tensor([48, 30])
    g, frames = members[0].log_probs(x, n)
    system = SpecialistSystem(members, [subset], top_n=1, steps=200, lr=0.3)
    q, q_frames = system.log_probs(x, n)
    assert torch.equal(frames, q_frames)
    valid = torch.arange(g.shape[1])[None, :] < frames[:, None]
    active = torch.isin(g.argmax(-1), torch.tensor(subset)) & valid
    idle = valid & ~active
    assert idle.any()
    torch.testing.assert_close(q[idle], g[idle])
    torch.testing.assert_close(q[valid].exp().sum(-1), torch.ones(int(valid.sum())))
    if active.any():  # an untrained specialist disagrees: active frames move
        assert not torch.allclose(q[active], g[active], atol=1e-3)
    # a specialist that agrees with the generalist changes nothing anywhere
    agree = SpecialistSystem([members[0], members[0]], [subset], 1, 200, 0.3)
    agree._nets[1] = lambda f, m: (collapse_to_specialist(g, [0, *subset]), frames)
    torch.testing.assert_close(agree.log_probs(x, n)[0][valid], g[valid], atol=1e-4, rtol=0)
    # a dustbin shift only moves the specialist towards its dustbin: a huge one makes it always pick it
    shifted = SpecialistSystem(members, [subset], 1, 200, 0.3, shifts=[50.0])
    assert (shifted.specialist_choices(x, n)[valid] == -1).all()
    unshifted = SpecialistSystem(members, [subset], 1, 200, 0.3, shifts=[0.0])
    assert torch.equal(unshifted.specialist_choices(x, n), system.specialist_choices(x, n))


def test_plan_adds_specialists_their_row_and_a_student_taught_by_them():
    s = AsrSettings.from_dict(
        {
            "teachers": {"guidance": "none"},
            "specialists": {"enabled": True, "clusters": [2, 3]},
            "students": {"variants": ["scratch", "kd"]},
        }
    )
    p = plan(s)
    assert [m.name for m in p.specialists] == [f"specialist-{i}" for i in range(5)]
    assert p.systems[SPECIALISTS] == ["teacher-0", *(f"specialist-{i}" for i in range(5))]
    rows = [name for name, _ in p.rows()]
    assert SPECIALISTS in rows and not any(r.startswith("specialist-") for r in rows)
    student = p.spec("student-kd-spec")
    assert student.ensemble == SPECIALISTS and student.twin == "student-scratch"
    assert student.seed == p.spec("student-kd").seed and student.scale == p.spec("student-kd").scale
    assert SPECIALISTS not in plan(AsrSettings.from_dict({})).systems
    with pytest.raises(ConfigError, match="specialists.clusters"):
        AsrSettings.from_dict({"specialists": {"clusters": [1]}})


def test_specialists_on_the_transfer_set_need_one_and_change_only_their_own_fingerprint():
    on = {"enabled": True, "clusters": [2], "transfer": True}
    with pytest.raises(ConfigError, match="specialists.transfer"):  # no transfer set to learn from
        AsrSettings.from_dict({"specialists": on})
    base = {"teachers": {"guidance": "none"}, "transfer": {"utterances": 50}}
    plain = plan(AsrSettings.from_dict({**base, "specialists": {**on, "transfer": False}}))
    taught = plan(AsrSettings.from_dict({**base, "specialists": on}))
    assert not any(m.transfer for m in plain.specialists) and all(m.transfer for m in taught.specialists)
    assert taught.specialists[0].fingerprint["transfer"] == {"utterances": 50, "manifest": None}
    # the setting's old value leaves the fingerprints of specialists trained before it existed unchanged
    assert "transfer" not in plain.specialists[0].fingerprint["specialists"]
    assert taught.teachers == plain.teachers and taught.spec("student-kd") == plain.spec("student-kd")


@pytest.mark.slow  # an end-to-end recipe run (about 2 min on 2 cores)
def test_tiny_run_with_specialists_caches_their_combination_and_resumes(tmp_path):
    sets = [
        f"exp_dir={tmp_path}",
        "threads=1",
        "specialists.enabled=true",
        "specialists.clusters=[2]",
        "specialists.epochs=2",
        "specialists.dustbin=piece",  # the options besides the defaults (unit-tested above)
        "specialists.subset_share=0.5",
        "specialists.transfer=true",  # also the ensemble's transcripts of the transfer set
        "transfer.utterances=6",
        "teachers={count: 2, guidance: none}",
        "students.variants=[scratch,kd]",
        "students.kd_scales=[]",
        "score.beam.size=0",
    ]
    args = ["run", CONFIG, "--preset", "tiny", *[a for o in sets for a in ("--set", o)]]
    assert main(args) == 0
    recipe = AsrRecipe(load_asr_config(CONFIG, "tiny", sets))
    subsets = json.loads((tmp_path / SPECIALISTS / "subsets.json").read_text())["subsets"]
    pieces = [p for s in subsets for p in s]
    assert len(subsets) == 2 and len(pieces) == len(set(pieces)) and min(pieces) >= 1  # blank in none
    for i, subset in enumerate(subsets):
        info = recipe.ctx.exp.info(f"specialist-{i}")
        assert info["parameters"] > 0
        weights = torch.load(tmp_path / "models" / f"specialist-{i}" / "model.pt", weights_only=False)
        out = [v for k, v in weights["state"].items() if k.endswith("output.bias")][0]
        assert out.shape[0] == len(subset) + 2
    cache = TeacherCache(recipe.ctx.exp.cache_dir(SPECIALISTS), fingerprint=recipe.ctx.cache_fingerprint(SPECIALISTS))
    assert len(cache) == len(recipe.ctx.exp.texts("train")) + 6  # the training and transfer sets
    scores = json.loads((tmp_path / "score" / "scores.json").read_text())
    assert {SPECIALISTS, "student-kd-spec"} <= set(scores)
    assert scores[SPECIALISTS]["members"] == recipe.ctx.plan.systems[SPECIALISTS]
    assert [st for name, st in recipe.status() if name in (SPECIALISTS, "student-kd-spec")] == ["done", "done"]
    # the paper's Table 4 per frame: every labelled test frame in one row, blank frames apart
    table = json.loads((tmp_path / "score" / "specialists.json").read_text())
    assert table["frames"] > 0 and sum(r["cases"] for r in table["table4"]) == table["frames"]
    assert table["table4"][0]["covering"] == "blank" and {r["covering"] for r in table["table4"][1:]} <= {0, 1}
    assert table["wer"][SPECIALISTS] == scores[SPECIALISTS]["wer"]
    own = table["own_pieces"]  # each specialist alone on its own pieces' frames
    assert [o["pieces"] for o in own] == [len(s) for s in table["subsets"]]
    assert sum(o["frames"] for o in own) <= table["frames"] - table["table4"][0]["cases"]
    assert all(0 <= o[k] <= o["frames"] for o in own for k in ("generalist_correct", "specialist_correct"))
    assert "Table 4 per frame" in (tmp_path / "RESULTS.md").read_text()
    described = json.loads((tmp_path / SPECIALISTS / "specialists.json").read_text())
    assert len(described["dustbin_shifts"]) == 2 and min(described["dustbin_shifts"]) >= 0  # oversampled or natural
    # with the transfer set: the ensemble's non-empty transcripts of it join the specialists' utterances
    hyps = json.loads((recipe.ctx.exp.train_hyps_file("ensemble")).read_text())
    transfer = {u for u, h in hyps.items() if u not in recipe.ctx.exp.texts("train") and h.strip()}
    pool = len(recipe.ctx.exp.texts("train")) + len(transfer)
    assert all(0 < n <= pool for n in described["utterances"])
    assert transfer and transfer <= set(specialist_texts(recipe.ctx))
    # the combination decodes from its folder like an ensemble, with the score stage's WER
    out = tmp_path / "eval-specialists"
    assert (
        main(["evaluate", str(tmp_path / SPECIALISTS), str(tmp_path / "corpus" / "test.csv"), "--out", str(out)]) == 0
    )
    evaluated = json.loads((out / "scores.json").read_text())
    assert evaluated["wer"] == pytest.approx(scores[SPECIALISTS]["wer"], abs=0.02)
