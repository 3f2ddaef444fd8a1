"""Streaming students: a unidirectional encoder with delayed outputs, decoded chunk by chunk
exactly as the whole utterance, and exact on padded batches."""

import pytest
import torch

from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
from asr_kd.models.streaming import Streamer, stream_log_probs


def _model(**shape) -> CTCAcousticModel:
    torch.manual_seed(0)
    cfg = AcousticConfig(num_classes=7, n_mels=12, hidden=6, conv_channels=2, layers=2, encoder="lstm", **shape)
    return CTCAcousticModel(cfg).eval()


@pytest.mark.parametrize("stack, delay", [(1, 0), (1, 3), (2, 1), (3, 2)])
@pytest.mark.parametrize("frames", [1, 5, 37, 64, 101])
def test_chunked_decoding_equals_the_whole_utterance(stack, delay, frames):
    model = _model(stack=stack, delay=delay)
    feats = torch.randn(frames, 12)
    whole, n = model(feats[None], torch.tensor([frames]))
    expected = whole[0, : int(n[0])].log_softmax(-1)
    for chunk in (1, 3, 8, 16, 1000):
        got = stream_log_probs(model, feats, chunk)
        assert got.shape == expected.shape, (chunk, got.shape, expected.shape)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("stack, delay", [(1, 2), (3, 1)])
def test_a_delayed_model_is_exact_on_padded_batches_and_waits_for_its_future(stack, delay):
    model = _model(stack=stack, delay=delay)
    x, n = torch.randn(3, 61, 12), torch.tensor([61, 41, 13])
    batch, nb = model(x, n)
    for i in range(3):
        alone, _ = model(x[i : i + 1, : n[i]], n[i : i + 1])
        torch.testing.assert_close(alone[0], batch[i, : nb[i]], atol=1e-5, rtol=1e-4)
    # frame 0's output reads the features of frame `delay` (its future), not those well past it
    near, far = x[:1].clone(), x[:1].clone()
    near[0, 4 * delay : 4 * delay + 4] += 5.0
    far[0, 4 * (delay + stack) + 8 :] += 5.0
    assert not torch.allclose(model(near, n[:1])[0][0, 0], batch[0, 0])
    torch.testing.assert_close(model(far, n[:1])[0][0, 0], batch[0, 0])
    s = Streamer(model)
    assert s.latency_ms(chunk_frames=16) == 160 + 30 + 40 * (stack - 1 + delay)


def test_a_bidirectional_model_is_refused_for_streaming():
    model = CTCAcousticModel(AcousticConfig(num_classes=5, n_mels=8, hidden=4, conv_channels=2, packed=False))
    with pytest.raises(ValueError, match="stream a model with encoder: lstm"):
        Streamer(model)
