"""Exported models (ONNX, TorchScript; fp32, int8): equal to PyTorch within the stated tolerance
on batches of other lengths than the export's, loaded like bundles, wrong files refused."""

import json

import pytest
import torch

from asr_kd.asr.inference import load_system
from asr_kd.cli import main
from asr_kd.data.features import GlobalCMVN
from asr_kd.data.tokenizer import train_tokenizer
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
from asr_kd.models.bundle import BundleError, load_bundle, save_bundle
from asr_kd.models.export import FP32_TOLERANCE, export_model, load_model


def _bundle(folder, **shape):
    tok = train_tokenizer(["HELLO WORLD", "GOOD DAY"], folder / "tok", kind="char")
    torch.manual_seed(0)
    shape = {"packed": False, **shape}
    cfg = AcousticConfig(num_classes=tok.vocab_size + 1, n_mels=16, conv_channels=2, **shape)
    cmvn = GlobalCMVN(16)
    cmvn.accumulate(3 + 2 * torch.randn(2, 50, 16), torch.tensor([50, 50]))
    cmvn.finalize()
    save_bundle(folder / "model.pt", CTCAcousticModel(cfg), cmvn, {"name": "s", "x": 1}, tokenizer_dir=folder / "tok")
    return folder / "model.pt"


SHAPES = {
    "blstm": {"hidden": 8},
    "blstm-stack3": {"hidden": 8, "stack": 3},
    "conv-stack2": {"hidden": 8, "encoder": "conv", "kernel": 3, "stack": 2},
    "blstm-packed": {"hidden": 8, "packed": True},  # ONNX: packed, TorchScript: padded (the same function)
    "lstm-delay2": {"hidden": 8, "encoder": "lstm", "delay": 2},
}


@pytest.mark.parametrize("suffix", [".onnx", ".ts"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_an_exported_fp32_model_equals_pytorch_on_other_lengths_and_keeps_tokenizer_and_info(tmp_path, suffix, shape):
    path = _bundle(tmp_path, **SHAPES[shape])
    report = export_model(path, tmp_path / f"m{suffix}")
    assert report["max_abs_diff"] <= FP32_TOLERANCE and report["argmax_agreement"] == 1.0
    bundle, exported = load_bundle(path), load_model(tmp_path / f"m{suffix}")
    x, n = 5 + 3 * torch.randn(3, 97, 16), torch.tensor([97, 52, 23])  # lengths the export never saw
    (a, na), (b, nb) = bundle.log_probs(x, n), exported.log_probs(x, n)
    assert torch.equal(na, nb)
    for i, k in enumerate(na.tolist()):
        torch.testing.assert_close(b[i, :k], a[i, :k], atol=FP32_TOLERANCE, rtol=0)
    assert exported.info == bundle.info and exported.parameters == bundle.parameters
    assert exported.tokenizer().decode([1, 2]) == bundle.tokenizer().decode([1, 2])
    assert exported.architecture == bundle.architecture


@pytest.mark.parametrize("suffix", [".onnx", ".ts"])
@pytest.mark.parametrize("packed", [False, True])
def test_int8_is_smaller_and_close(tmp_path, suffix, packed):
    path = _bundle(tmp_path, hidden=64, packed=packed)
    fp32, int8 = export_model(path, tmp_path / f"a{suffix}"), export_model(path, tmp_path / f"b{suffix}", int8=True)
    assert int8["int8"] and int8["bytes"] < 0.5 * fp32["bytes"], (int8["bytes"], fp32["bytes"])
    assert 0 < int8["max_abs_diff"] < 0.5 and int8["argmax_agreement"] > 0.9
    record = load_model(tmp_path / f"b{suffix}").record
    assert record["int8"] and record["format"] == ("onnx" if suffix == ".onnx" else "torchscript")


@pytest.mark.parametrize("packed", [False, True])
def test_a_bilstm_goes_to_onnx_as_one_bidirectional_node_per_layer_int8_but_its_convs(tmp_path, packed):
    import onnx

    path = _bundle(tmp_path, hidden=8, layers=2, packed=packed)
    export_model(path, tmp_path / "m.onnx", int8=True)
    nodes = onnx.load(str(tmp_path / "m.onnx")).graph.node
    lstms = [n for n in nodes if n.op_type == "DynamicQuantizeLSTM"]
    assert len(lstms) == 2 and "GatherElements" not in [n.op_type for n in nodes]  # no per-item reversal
    for n in lstms:
        assert {a.name: a.s for a in n.attribute}["direction"] == b"bidirectional"
        assert n.input[4]  # sequence_lens: each item's own length
    ops = [n.op_type for n in nodes]
    assert ops.count("Conv") == 2 and "ConvInteger" not in ops


def test_an_exported_model_decodes_through_the_inference_path(tmp_path):
    path = _bundle(tmp_path, hidden=8)
    export_model(path, tmp_path / "m.onnx")
    x, n = torch.randn(2, 60, 16), torch.tensor([60, 41])
    (a, na), (b, nb) = load_system(str(path)).log_probs(x, n), load_system(str(tmp_path / "m.onnx")).log_probs(x, n)
    assert torch.equal(na, nb)
    for i in range(2):  # real frames only: what padded frames hold differs (and is never read)
        torch.testing.assert_close(b[i, : na[i]], a[i, : na[i]], atol=FP32_TOLERANCE, rtol=0)
    two, k = load_system(f"{tmp_path / 'm.onnx'},{path}").log_probs(x, n)  # an exported model and a bundle
    assert torch.equal(k, na)
    for i in range(2):
        torch.testing.assert_close(two[i, : k[i]], a[i, : k[i]], atol=FP32_TOLERANCE, rtol=0)


def test_wrong_or_damaged_exported_files_are_refused_by_name(tmp_path, capsys):
    path = _bundle(tmp_path, hidden=8)
    export_model(path, tmp_path / "m.onnx")
    export_model(path, tmp_path / "m.ts")
    (tmp_path / "cut.onnx").write_bytes((tmp_path / "m.onnx").read_bytes()[:3000])
    (tmp_path / "cut.ts").write_bytes((tmp_path / "m.ts").read_bytes()[:3000])
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.warns(DeprecationWarning):  # an ONNX file of another program
        torch.onnx.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),), str(tmp_path / "other.onnx"), dynamo=False)
    for name, expect in [
        ("cut.onnx", "not an ONNX model exported by asr-kd"),
        ("text.onnx", "not an ONNX model exported by asr-kd"),
        ("other.onnx", "not an ONNX model exported by asr-kd"),
        ("cut.ts", "not a TorchScript model exported by asr-kd"),
        ("missing.onnx", "no exported model here"),
    ]:
        with pytest.raises(BundleError, match=expect) as err:
            load_model(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    assert main(["export", str(path), str(tmp_path / "m.txt")]) == 2
    assert "give --format onnx or torchscript" in capsys.readouterr().err
    lstm = _bundle(tmp_path / "lstm", hidden=8, encoder="lstm")
    assert main(["export", str(lstm), str(tmp_path / "lstm.ts"), "--int8"]) == 2  # it would stay fp32
    assert "export int8 as ONNX" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.onnx")]) == 2
    assert "no trained model here" in capsys.readouterr().err
    assert main(["export", str(path), str(tmp_path / "c.ts"), "--int8"]) == 0
    out = capsys.readouterr().out
    assert "torchscript int8" in out and "max abs difference" in out
    assert json.loads(json.dumps(load_model(tmp_path / "c.ts").record))["info"]["x"] == 1


def test_transcribe_streams_an_lstm_model_as_it_decodes_the_whole_file(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(12000)).astype("float32"), 16000)
    lstm = _bundle(tmp_path / "lstm", hidden=8, encoder="lstm", delay=1)
    lstm_80 = tmp_path / "lstm80"
    tok = train_tokenizer(["HELLO WORLD"], tmp_path / "tok80", kind="char")
    torch.manual_seed(0)
    cfg = AcousticConfig(num_classes=tok.vocab_size + 1, n_mels=80, conv_channels=2, hidden=8, encoder="lstm", delay=1)
    cmvn = GlobalCMVN(80)
    cmvn.accumulate(torch.randn(1, 20, 80), torch.tensor([20]))
    cmvn.finalize()
    info = {"fingerprint": {"features": {"n_mels": 80}}}
    save_bundle(lstm_80 / "model.pt", CTCAcousticModel(cfg), cmvn, info, tokenizer_dir=tmp_path / "tok80")
    wav = str(tmp_path / "a.wav")
    assert main(["transcribe", str(lstm_80), wav]) == 0
    whole = capsys.readouterr().out
    assert main(["transcribe", str(lstm_80), wav, "--chunk-ms", "160"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == whole.splitlines()[-1]  # the same text, decoded as a stream
    assert "latency 230 ms" in out  # 160 ms chunks + 30 ms front end + 40 ms delay
    assert main(["transcribe", str(lstm), wav, "--chunk-ms", "160", "--beam", "4"]) == 2
    assert "greedy only" in capsys.readouterr().err
    blstm = _bundle(tmp_path / "blstm", hidden=8)
    assert main(["transcribe", str(blstm), wav, "--chunk-ms", "160"]) == 2
    assert "stream a model with encoder: lstm" in capsys.readouterr().err
