"""The ASR recipe's shape: typed settings, stable stage fingerprints, old bundles, one inference path."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from asr_kd.asr.inference import System, load_system, write_ensemble
from asr_kd.asr.recipe import AsrRecipe, default_config_path, load_asr_config
from asr_kd.asr.settings import AsrSettings
from asr_kd.cli import main
from asr_kd.config import ConfigError
from asr_kd.data.features import FeatureConfig, GlobalCMVN
from asr_kd.data.tokenizer import train_tokenizer
from asr_kd.distill import combine
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
from asr_kd.models.bundle import load_bundle, read_info, save_bundle

CONFIG = default_config_path("synth_en")
DATA = Path(__file__).parent / "data"


def test_the_settings_defaults_are_the_reference_config():
    base = yaml.safe_load(CONFIG.read_text())["base"]
    assert AsrSettings().to_dict() == base  # one set of defaults: the code's, spelled out in the YAML
    lib = yaml.safe_load(default_config_path("librispeech").read_text())["base"]
    assert AsrSettings.from_dict(lib).to_dict() == lib


def test_settings_refuse_unknown_keys_and_wrong_kinds_and_fill_in_missing_ones():
    with pytest.raises(ConfigError, match="unknown key 'students.kd.temprature'"):
        AsrSettings.from_dict({"students": {"kd": {"temprature": 2}}})
    with pytest.raises(ConfigError, match="score.beam.size: expected a number"):
        AsrSettings.from_dict({"score": {"beam": {"size": "big"}}})
    with pytest.raises(ConfigError, match="ensemble.method must be one of"):
        AsrSettings.from_dict({"ensemble": {"method": "median"}})
    with pytest.raises(ConfigError, match="teachers.overrides.1.model.hiden"):
        AsrSettings.from_dict({"teachers": {"overrides": {1: {"model": {"hiden": 3}}}}})
    with pytest.raises(ConfigError, match="students.kd.mixup mixes utterances"):  # cached targets: no mixes
        AsrSettings.from_dict({"students": {"kd": {"mixup": 1.0, "hard_weight": 0.0}}})
    with pytest.raises(ConfigError, match="small_data.kd.mixup .* hard_weight: 0 \\(now 'live', 0.5\\)"):
        AsrSettings.from_dict({"small_data": {"kd": {"mixup": 1.0, "targets": "live"}}})
    live = {"mixup": 0.4, "targets": "live", "hard_weight": 0.0}
    assert AsrSettings.from_dict({"small_data": {"kd": live}}).small_data.kd["mixup"] == 0.4
    assert AsrSettings.from_dict({"train": {"epochs": 2}}).train.lr == AsrSettings().train.lr


def test_stage_fingerprints_are_those_of_experiments_made_before_the_restructure():
    # tests/data/tiny_stage_configs.json: the stage markers' configs of a tiny run made with the
    # code before the recipe was split into stage modules; equal configs mean such experiments
    # still list every stage as done
    stored = json.loads((DATA / "tiny_stage_configs.json").read_text())
    old_defaults = ["model.packed=true", "students.scale_by=width"]  # the defaults of that time
    stages = AsrRecipe(load_asr_config(CONFIG, "tiny", old_defaults)).stages()
    assert {s.name: json.loads(json.dumps(s.config)) for s in stages} == stored
    # today's defaults (padded BiLSTM, students sized by parameters) retrain the models, nothing else
    now = {s.name: json.loads(json.dumps(s.config)) for s in AsrRecipe(load_asr_config(CONFIG, "tiny")).stages()}
    assert [name for name in stored if now[name] != stored[name]] == [s for s in stored if "-" in s]
    assert now["student-kd"] == {
        **stored["student-kd"],
        "model": {**stored["student-kd"]["model"], "packed": False},
        "scale_by": "params",
    }
    # a setting added with its old default is not recorded; another value is
    changed = AsrRecipe(load_asr_config(CONFIG, "tiny", ["ensemble.weights=[2, 1]"])).stages()
    assert [s.config for s in changed if s.name == "ensemble"][0]["ensemble"]["weights"] == [2, 1]


def test_specs_carry_behaviour_not_names():
    cfg = load_asr_config(CONFIG, "tiny", ["students.temperatures=[3]"])
    plan = AsrRecipe(cfg).ctx.plan
    t3 = plan.spec("student-kd-T3")
    assert (t3.variant, t3.ensemble, t3.kd.temperature, t3.scale) == ("kd", "ensemble", 3.0, 0.5)
    assert plan.spec("student-kd-x1").scale == 1.0 and plan.spec("guided-1").guided
    stages = AsrRecipe(cfg).stages()
    assert [s.name for s in stages if s.parallel] == [s.name for s in plan.teachers + plan.students]


def _bundle(path: Path, tok_dir: Path, probs: list[float], legacy: bool = False) -> None:
    """A model whose every frame has the class distribution ``probs`` (output weights 0, bias log p)."""
    torch.manual_seed(0)
    model = CTCAcousticModel(AcousticConfig(num_classes=len(probs), n_mels=80, hidden=4, conv_channels=2, layers=1))
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.copy_(torch.tensor(probs).log())
    info = {"name": path.parent.name, "fingerprint": {"features": FeatureConfig().fingerprint()}, "valid_wer": 0.25}
    save_bundle(path, model, GlobalCMVN(80), info, tokenizer_dir=tok_dir)
    if legacy:  # as written before the architecture was recorded
        b = torch.load(path, weights_only=False)
        del b["format"], b["architecture"], b["config"]["encoder"]
        b["state"] = {k.replace("subsample.convs.", "subsample."): v for k, v in b["state"].items()}
        b["info"]["valid_wer"] = 25.0
        torch.save(b, path)


@pytest.fixture()
def pair(tmp_path):
    tok = train_tokenizer(["a b", "b a"], tmp_path / "tok", kind="char")
    a, b = tok.encode("a")[0], tok.encode("b")[0]
    classes = tok.vocab_size
    one = [0.01] * classes
    one[a] = 1 - 0.01 * (classes - 1)
    two = [1e-4] * classes
    two[0], two[b] = 0.45, 0.55 - 1e-4 * (classes - 2)
    _bundle(tmp_path / "m1" / "model.pt", tmp_path / "tok", one)
    _bundle(tmp_path / "m2" / "model.pt", tmp_path / "tok", two, legacy=True)
    wav = tmp_path / "x.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    return tmp_path, wav


def test_a_bundle_saved_before_the_registry_loads_and_decodes_the_same(pair):
    root, _ = pair
    old = load_bundle(root / "m2")
    assert old.architecture == {"model": "CTCAcousticModel", "encoder": "blstm", "subsampling": 4}
    assert old.info["valid_wer"] == 0.25 and read_info(root / "m2")["valid_wer"] == 0.25  # a fraction
    assert read_info(root / "m2", stored=True)["valid_wer"] == 25.0


def test_the_cli_decodes_an_ensemble_with_its_configured_method(pair, capsys):
    root, wav = pair
    members = [root / "m1" / "model.pt", root / "m2" / "model.pt"]
    for method, heard in (("arithmetic", "a"), ("geometric", "b")):
        write_ensemble(root / method, members, method, None)
        assert load_system(root / method).method == method
        assert main(["transcribe", str(root / method), str(wav)]) == 0
        assert capsys.readouterr().out.strip().split("\t")[1] == heard, method
    comma = f"{members[0]},{members[1]}"
    assert main(["transcribe", comma, str(wav), "--method", "geometric"]) == 0
    assert capsys.readouterr().out.strip().endswith("\tb")
    assert main(["transcribe", comma, str(wav), "--weights", "1,0"]) == 0  # member 1 alone
    assert capsys.readouterr().out.strip().endswith("\ta")
    assert main(["transcribe", comma, str(wav), "--weights", "1"]) == 2
    assert "2 models" in capsys.readouterr().err


def test_an_ensemble_system_combines_like_the_core(pair):
    root, _ = pair
    system = load_system(f"{root / 'm1'},{root / 'm2'}", method="geometric", weights=[0.7, 0.3])
    x, n = torch.randn(2, 60, 80), torch.tensor([60, 30])
    lp, out_n = system.log_probs(x, n)
    outs = [m.log_probs(x, n)[0] for m in system.members]
    mask = torch.arange(lp.shape[1])[None, :] < out_n[:, None]
    torch.testing.assert_close(lp, combine(outs, "geometric", [0.7, 0.3], mask=mask))
    assert isinstance(system, System) and system.parameters == 2 * system.members[0].parameters


def test_the_padded_bilstm_is_the_packed_one_on_every_real_frame():
    torch.manual_seed(0)
    packed = CTCAcousticModel(AcousticConfig(num_classes=6, n_mels=16, hidden=8, conv_channels=2, dropout=0.0))
    padded = CTCAcousticModel(
        AcousticConfig(num_classes=6, n_mels=16, hidden=8, conv_channels=2, dropout=0.0, packed=False)
    )
    padded.load_state_dict(packed.state_dict())  # the same weights under the same names
    assert sorted(padded.state_dict()) == sorted(packed.state_dict())
    x, n = torch.randn(4, 60, 16), torch.tensor([60, 41, 13, 5])
    (a, na), (b, nb) = packed(x, n), padded(x, n)
    assert torch.equal(na, nb)
    real = torch.arange(a.shape[1])[None, :] < na[:, None]
    torch.testing.assert_close(a[real], b[real], atol=1e-6, rtol=1e-5)
    a[real].sum().backward()
    b[real].sum().backward()

    def lstm_name(name):  # encoder.bwd.1.weight_ih_l0 -> encoder.weight_ih_l1_reverse
        if not name.startswith(("encoder.fwd.", "encoder.bwd.")):
            return name
        _, direction, layer, param = name.split(".")
        return f"encoder.{param[:-1]}{layer}" + ("_reverse" if direction == "bwd" else "")

    grads = {lstm_name(k): p.grad for k, p in padded.named_parameters()}
    assert set(grads) == {k for k, _ in packed.named_parameters()}
    for name, p in packed.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-5, rtol=1e-4)
    x2 = x.clone()
    x2[2, 13:] = 100.0  # what lies past an item's end never reaches its frames
    torch.testing.assert_close(padded(x2, n)[0][2, : nb[2]], b[2, : nb[2]])


def test_students_are_sized_by_parameter_share_or_by_width():
    from asr_kd.models.acoustic import parameter_count

    cfg = load_asr_config(CONFIG, "demo", ["students.width_scales=[0.5]"])
    plan = AsrRecipe(cfg).ctx.plan
    arch = {s.name: s.architecture(29, 80) for s in [*plan.teachers, *plan.students]}
    teacher = parameter_count(arch["teacher-0"])
    half = parameter_count(arch["student-kd"])
    assert 0.45 * teacher < half <= 0.5 * teacher  # half the parameters, as wide as that allows
    assert arch["student-scratch"] == arch["student-kd"] and arch["student-kd-w0.5"].hidden == 64
    assert parameter_count(arch["student-scratch-w0.5"]) < 0.3 * teacher  # half-width: about a quarter
    shallow = AsrRecipe(load_asr_config(CONFIG, "demo", ["students.model={layers: 1}"])).ctx.plan
    one_layer = shallow.spec("student-kd").architecture(29, 80)
    assert one_layer.layers == 1 and parameter_count(one_layer) <= 0.5 * teacher < parameter_count(
        one_layer.scaled(1.05)
    )
    with pytest.raises(ConfigError, match="students.scale_by must be one of"):
        AsrSettings.from_dict({"students": {"scale_by": "flops"}})
    with pytest.raises(ConfigError, match="transfer.utterances synthesises"):
        AsrSettings.from_dict({"corpus": {"kind": "manifests"}, "transfer": {"utterances": 10}})


def test_a_conv_student_is_sized_by_parameters_and_exact_on_padded_batches():
    from asr_kd.models.acoustic import parameter_count

    over = ["students.model={encoder: conv, layers: 5, conv_channels: 8}"]
    plan = AsrRecipe(load_asr_config(CONFIG, "demo", over)).ctx.plan
    teacher = parameter_count(plan.spec("teacher-0").architecture(29, 80))
    conv = plan.spec("student-kd").architecture(29, 80)
    assert conv.encoder == "conv" and conv.layers == 5 and conv.kernel == 15
    assert 0.45 * teacher < parameter_count(conv) <= 0.5 * teacher < parameter_count(conv.scaled(1.05))
    torch.manual_seed(0)
    model = CTCAcousticModel(
        AcousticConfig(num_classes=6, n_mels=16, hidden=8, conv_channels=2, layers=2, kernel=5, encoder="conv")
    ).eval()
    x, n = torch.randn(3, 60, 16), torch.tensor([60, 41, 13])
    batch, out_n = model(x, n)
    for b in range(3):  # each item alone, cut to its length, gives its frames of the batch
        alone, _ = model(x[b : b + 1, : n[b]], n[b : b + 1])
        torch.testing.assert_close(alone[0], batch[b, : out_n[b]], atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="kernel must be odd"):
        AsrSettings.from_dict({"students": {"model": {"encoder": "conv", "kernel": 4}}}).check()
    with pytest.raises(ConfigError, match="unknown encoder 'tcn'"):
        AsrSettings.from_dict({"model": {"encoder": "tcn"}}).check()


@pytest.mark.parametrize("encoder", ["blstm", "conv"])
def test_a_stacked_model_keeps_the_frame_rate_and_is_exact_on_padded_batches(encoder):
    torch.manual_seed(0)
    cfg = AcousticConfig(
        num_classes=6, n_mels=16, hidden=8, conv_channels=2, dropout=0.0, packed=False, encoder=encoder, kernel=3
    )
    plain, stacked = CTCAcousticModel(cfg).eval(), CTCAcousticModel(replace(cfg, stack=2)).eval()
    x, n = torch.randn(3, 61, 16), torch.tensor([61, 41, 13])  # 16, 11 and 4 frames: odd and even
    (a, na), (b, nb) = plain(x, n), stacked(x, n)
    assert a.shape == b.shape and torch.equal(na, nb)  # the recipe's frame rate, the same lengths
    for i in range(3):  # each item alone gives its frames of the batch
        alone, _ = stacked(x[i : i + 1, : n[i]], n[i : i + 1])
        torch.testing.assert_close(alone[0], b[i, : nb[i]], atol=1e-5, rtol=1e-4)
    # the encoder runs on half the steps: 16 front-end frames -> 8
    seen = []
    stacked.encoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    stacked(x, n)
    assert seen == [8]
    with pytest.raises(ConfigError, match="stack must be 1 or more"):
        AsrSettings.from_dict({"students": {"model": {"stack": 0}}}).check()


def test_student_seeds_add_scratch_and_distilled_pairs_and_leave_the_main_students_alone():
    one = AsrRecipe(load_asr_config(CONFIG, "demo")).ctx.plan
    three = AsrRecipe(load_asr_config(CONFIG, "demo", ["students.seeds=[0, 1, 2]"])).ctx.plan
    names = [s.name for s in three.students]
    assert names[-4:] == ["student-scratch-s1", "student-kd-s1", "student-scratch-s2", "student-kd-s2"]
    assert [three.spec(n).seed for n in ("student-kd", "student-kd-s1", "student-kd-s2")] == [77, 78, 79]
    assert three.spec("student-kd-s2").twin == "student-scratch-s2" and three.spec("student-kd").seed_pair
    assert three.spec("student-kd").fingerprint == one.spec("student-kd").fingerprint  # stays done
    assert not one.spec("student-kd").seed_pair and one.spec("student-kd").twin == "student-scratch"
    with pytest.raises(ConfigError, match="students.seeds"):
        AsrSettings.from_dict({"students": {"seeds": [1, 1]}})
