"""The teacher-output cache: round trip, fingerprint refusal, kill-and-resume."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from asr_kd.distill import CacheError, CacheWriter, TeacherCache, TopK

FP = {"features": {"n_mels": 80, "hop_ms": 10}, "subsampling": 4, "tokenizer": "unigram-256"}


def outputs_for(item_id: str, classes: int = 50) -> torch.Tensor:
    """Deterministic (frames, classes) logits for an ID, variable length."""
    g = torch.Generator().manual_seed(sum(map(ord, item_id)))
    frames = 3 + int(torch.randint(0, 20, (1,), generator=g))
    return torch.randn(frames, classes, generator=g) * 4


def test_round_trip_exact_indices_fp16_values(tmp_path):
    ids = [f"spk{i % 3}-utt{i}" for i in range(23)]
    with CacheWriter(tmp_path, num_classes=50, k=8, fingerprint=FP, shard_size=5) as w:
        for i in ids:
            w.add(i, outputs_for(i))
    cache = TeacherCache(tmp_path, fingerprint=FP)
    assert sorted(cache.ids()) == sorted(ids)
    assert len(list(tmp_path.glob("shard-*.pt"))) == 5
    for i in ids[::-1]:  # random access in another order than written
        expected = TopK.from_logits(outputs_for(i), 8)
        got = cache[i]
        assert torch.equal(got.indices, expected.indices)
        torch.testing.assert_close(got.log_probs, expected.log_probs.half().float(), rtol=0, atol=0)
        torch.testing.assert_close(got.log_probs, expected.log_probs, rtol=1e-3, atol=1e-2)
    assert cache.bytes_per_frame() == 8 * (2 + 2)
    with pytest.raises(KeyError, match="not in the teacher cache"):
        cache["unknown-id"]


def test_batch_pads_and_masks(tmp_path):
    with CacheWriter(tmp_path, num_classes=50, k=4, fingerprint=FP) as w:
        for i in ("a", "bb", "ccc"):
            w.add(i, outputs_for(i))
    cache = TeacherCache(tmp_path)
    top, mask = cache.batch(["ccc", "a"])
    lengths = [cache.num_frames("ccc"), cache.num_frames("a")]
    assert mask.sum(1).tolist() == lengths
    assert top.log_probs.shape == (2, max(lengths), 4)
    assert torch.equal(top.indices[1, : lengths[1]], cache["a"].indices)


def test_full_k_round_trip_is_the_dense_distribution(tmp_path):
    logits = torch.randn(6, 12)
    with CacheWriter(tmp_path, num_classes=12, k=99, fingerprint=FP) as w:
        w.add("u", logits)
    dense = TeacherCache(tmp_path)["u"].to_dense(12)
    torch.testing.assert_close(dense.exp().sum(-1), torch.ones(6), atol=5e-3, rtol=0)
    torch.testing.assert_close(dense, torch.log_softmax(logits, -1), atol=1e-2, rtol=1e-3)


def test_wrong_fingerprint_is_refused_naming_the_field(tmp_path):
    with CacheWriter(tmp_path, num_classes=50, k=4, fingerprint=FP) as w:
        w.add("u", outputs_for("u"))
    other = {**FP, "features": {"n_mels": 40, "hop_ms": 10}}
    with pytest.raises(CacheError, match=r"features\.n_mels': cache has 80, expected 40"):
        TeacherCache(tmp_path, fingerprint=other)
    with pytest.raises(CacheError, match="features.n_mels"):
        CacheWriter(tmp_path, num_classes=50, k=4, fingerprint=other)  # nor resumed
    with pytest.raises(CacheError, match="k=4 of 50"):
        CacheWriter(tmp_path, num_classes=50, k=8, fingerprint=FP)


def test_duplicate_id_refused(tmp_path):
    with pytest.raises(CacheError, match="already in the cache"):
        with CacheWriter(tmp_path, num_classes=50, k=4, fingerprint=FP) as w:
            w.add("u", outputs_for("u"))
            w.add("u", outputs_for("u"))
    with pytest.raises(CacheError, match="incomplete"):  # the exception left it unfinished
        TeacherCache(tmp_path)


WRITER = textwrap.dedent(
    """
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_distill_cache import FP, outputs_for
    from asr_kd.distill import CacheWriter
    w = CacheWriter({root!r}, num_classes=50, k=8, fingerprint=FP, shard_size=3)
    for i in range(300):
        item = f"utt{{i:03d}}"
        if item in w:
            continue
        w.add(item, outputs_for(item))
        time.sleep(0.01)
    w.close()
    """
)


def test_cache_killed_mid_write_is_detected_and_resumed(tmp_path):
    root = tmp_path / "cache"
    script = WRITER.format(tests=os.path.dirname(__file__), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while len(list(root.glob("shard-*.pt"))) < 4 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(root.glob("shard-*.pt"))) >= 4
    (root / "shard-09999.pt.tmp").write_bytes(b"half a shard")  # as a kill inside torch.save leaves

    with pytest.raises(CacheError, match="incomplete"):
        TeacherCache(root)
    partial = TeacherCache(root, allow_incomplete=True)
    assert 12 <= len(partial) < 300
    assert len(partial) % 3 == 0  # only whole shards are visible

    # Resume: finished shards are kept, the stale .tmp deleted, the rest written.
    subprocess.run([sys.executable, "-c", script], check=True)
    cache = TeacherCache(root, fingerprint=FP)
    assert sorted(cache.ids()) == [f"utt{i:03d}" for i in range(300)]
    assert not list(root.glob("*.tmp"))
    assert torch.equal(cache["utt007"].indices, TopK.from_logits(outputs_for("utt007"), 8).indices)


def test_corrupt_shard_is_reported(tmp_path):
    with CacheWriter(tmp_path, num_classes=50, k=4, fingerprint=FP) as w:
        w.add("u", outputs_for("u"))
    shard = next(tmp_path.glob("shard-*.pt"))
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(CacheError, match="unreadable cache shard"):
        TeacherCache(tmp_path)
