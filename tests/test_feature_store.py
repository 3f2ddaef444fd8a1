"""The sharded, memory-mapped feature store against the one-file features it replaces."""

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_kd.asr.data import extract_features, load_features
from asr_kd.data.feature_store import FeatureStore, write_store
from asr_kd.data.features import FeatureConfig, FrontEnd
from asr_kd.data.manifest_io import Entry


def _entries(tmp_path, n: int = 7) -> list[Entry]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(1600 * (3 + i))).astype("float32"), 16000)
        out.append(Entry(f"utt{i}", (3 + i) * 0.1, str(path), "spk", "HI"))
    return out


def test_the_store_holds_what_the_one_file_held_for_every_id(tmp_path):
    entries, config = _entries(tmp_path), FeatureConfig()
    frontend = FrontEnd(config)
    old = {}  # the former format: one torch.save'd {id: (frames, n_mels) float16}, one utterance at a time
    for e in entries:
        wav = torch.from_numpy(sf.read(e.wav, dtype="float32")[0])[None]
        feats, frames = frontend(wav, torch.tensor([wav.shape[1]]))
        old[e.id] = feats[0, : int(frames[0])].half()
    torch.save({"config": config.fingerprint(), "feats": old}, tmp_path / "train.pt")
    store = extract_features(entries, tmp_path / "feats" / "train", config, batch_size=3, progress=False, shard_size=3)
    legacy = load_features(tmp_path / "train.pt")
    assert list(store) == list(legacy) == [e.id for e in entries]
    assert len(list((tmp_path / "feats" / "train").glob("shard-*.pt"))) == 3
    for item in legacy:
        torch.testing.assert_close(store[item].float(), legacy[item].float(), atol=2e-3, rtol=0)  # fp16 rounding
        assert store.frames(item) == len(legacy[item])
    assert isinstance(load_features(tmp_path / "feats" / "train"), FeatureStore)


def test_an_interrupted_write_keeps_its_shards_and_a_new_config_starts_over(tmp_path):
    items = {f"u{i}": torch.full((2 + i, 4), float(i)) for i in range(10)}
    calls = []

    def compute(ids, fail_after=None):
        calls.append(list(ids))
        if fail_after is not None and len(calls) > fail_after:
            raise KeyboardInterrupt("killed")
        return {i: items[i] for i in ids}

    with pytest.raises(KeyboardInterrupt):
        write_store(tmp_path, list(items), lambda ids: compute(ids, fail_after=2), {"n_mels": 4}, shard_size=3)
    with pytest.raises(FileNotFoundError, match="no finished feature store"):
        FeatureStore(tmp_path)
    calls.clear()
    write_store(tmp_path, list(items), compute, {"n_mels": 4}, shard_size=3)
    assert calls == [["u6", "u7", "u8"], ["u9"]], "finished shards were computed again"
    store = FeatureStore(tmp_path)
    assert all(torch.equal(store[i], items[i].half()) for i in items)
    calls.clear()
    write_store(tmp_path, list(items), compute, {"n_mels": 4}, shard_size=3)
    assert calls == []  # finished with this config and these IDs: reused
    write_store(tmp_path, list(items)[:4], compute, {"n_mels": 8}, shard_size=3)
    assert len(calls) == 2 and list(FeatureStore(tmp_path)) == ["u0", "u1", "u2", "u3"]
    assert len(list(tmp_path.glob("shard-*.pt"))) == 2
