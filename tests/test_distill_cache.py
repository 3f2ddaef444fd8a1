"""The teacher-output cache: round trip, fingerprint refusal, kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from asr_kd.distill import CacheError, CacheWriter, TeacherCache, TopK
from asr_kd.distill.cache import META

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
    cache = TeacherCache(tmp_path, fingerprint=FP)
    top, mask = cache.batch(["ccc", "a"])
    lengths = [cache.num_frames("ccc"), cache.num_frames("a")]
    assert mask.sum(1).tolist() == lengths
    assert top.log_probs.shape == (2, max(lengths), 4)
    assert torch.equal(top.indices[1, : lengths[1]], cache["a"].indices)


def test_full_k_round_trip_is_the_dense_distribution(tmp_path):
    logits = torch.randn(6, 12)
    with CacheWriter(tmp_path, num_classes=12, k=99, fingerprint=FP) as w:
        w.add("u", logits)
    dense = TeacherCache(tmp_path, fingerprint=FP)["u"].to_dense(12)
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
        TeacherCache(tmp_path, fingerprint=FP)


WRITER = textwrap.dedent(
    """
    import os, sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_distill_cache import FP, outputs_for
    from asr_kd.distill import CacheWriter
    block = os.environ.get("BLOCK_AFTER_SHARDS")
    w = CacheWriter({root!r}, num_classes=50, k=8, fingerprint=FP, shard_size=3)
    for i in range(300):
        item = f"utt{{i:03d}}"
        if item in w:
            continue
        w.add(item, outputs_for(item))
        if block and len(w._shards) >= int(block) and len(w._pending) == 2:
            open({ready!r}, "w").close()  # 4 shards written, 2 items pending: kill me now
            time.sleep(120)
    w.close()
    """
)


@pytest.mark.slow
def test_cache_killed_mid_write_is_detected_and_resumed(tmp_path):
    root, ready = tmp_path / "cache", tmp_path / "ready"
    script = WRITER.format(tests=os.path.dirname(__file__), root=str(root), ready=str(ready))
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "BLOCK_AFTER_SHARDS": "4"})
    deadline = time.time() + 120
    while not ready.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ready.exists(), "the writer never reached the kill point"
    (root / "shard-00004.pt.tmp").write_bytes(b"half a shard")  # as a kill inside torch.save leaves

    with pytest.raises(CacheError, match="incomplete"):
        TeacherCache(root, fingerprint=FP)
    partial = TeacherCache(root, fingerprint=FP, allow_incomplete=True)
    assert len(partial) == 12  # 4 whole shards; the 2 pending items and the .tmp are not visible

    # Resume: finished shards are kept, the stale .tmp deleted, the rest written.
    subprocess.run([sys.executable, "-c", script], check=True)
    cache = TeacherCache(root, fingerprint=FP)
    assert sorted(cache.ids()) == [f"utt{i:03d}" for i in range(300)]
    assert not list(root.glob("*.tmp"))
    assert torch.equal(cache["utt013"].indices, TopK.from_logits(outputs_for("utt013"), 8).indices)


def test_resume_after_a_deleted_shard_never_overwrites(tmp_path):
    """A shard deleted (as the corrupt-shard message advises) is redone; none is overwritten."""

    def write(ids):
        with CacheWriter(tmp_path, num_classes=50, k=4, fingerprint=FP, shard_size=1) as w:
            for i in ids:
                if i not in w:
                    w.add(i, outputs_for(i))

    write(["u0", "u1", "u2"])
    (tmp_path / "shard-00001.pt").unlink()
    write(["u0", "u1", "u2", "u3"])
    assert sorted(TeacherCache(tmp_path, fingerprint=FP).ids()) == ["u0", "u1", "u2", "u3"]


def test_one_writer_at_a_time_and_no_orphan_shards(tmp_path):
    first = CacheWriter(tmp_path / "a", num_classes=50, k=4, fingerprint=FP)
    with pytest.raises(CacheError, match="another process is writing"):
        CacheWriter(tmp_path / "a", num_classes=50, k=4, fingerprint=FP)
    first.close()
    CacheWriter(tmp_path / "a", num_classes=50, k=4, fingerprint=FP).close()  # free again
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "shard-00000.pt").write_bytes(b"x")
    with pytest.raises(CacheError, match="no meta.json"):
        CacheWriter(tmp_path / "b", num_classes=50, k=4, fingerprint=FP)


def test_topk_indices_out_of_range_refused(tmp_path):
    with CacheWriter(tmp_path, num_classes=5, k=2, fingerprint=FP) as w:
        with pytest.raises(ValueError, match="outside 0..4"):
            w.add("u", TopK(torch.zeros(3, 2), torch.tensor([[0, 7]] * 3)))


def test_corrupt_shard_is_reported(tmp_path):
    with CacheWriter(tmp_path, num_classes=50, k=4, fingerprint=FP) as w:
        w.add("u", outputs_for("u"))
    shard = next(tmp_path.glob("shard-*.pt"))
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(CacheError, match="unreadable cache shard"):
        TeacherCache(tmp_path, fingerprint=FP)


PART_WRITER = """
import sys, torch
from asr_kd.distill import CacheWriter, part_dir
root, part, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with CacheWriter(part_dir(root, part, parts), num_classes=50, k=4, fingerprint={"n_mels": 80}, shard_size=3) as w:
    for i in range(part, 20, parts):  # this process's share of the 20 items
        w.add(f"utt{i:02d}", torch.randn(5 + i, 50, generator=torch.Generator().manual_seed(i)))
"""


def test_two_processes_writing_parts_join_into_the_cache_of_one(tmp_path):
    from asr_kd.distill import join_parts, part_dir

    one = tmp_path / "one"
    with CacheWriter(one, num_classes=50, k=4, fingerprint={"n_mels": 80}, shard_size=3) as w:
        for i in range(20):
            w.add(f"utt{i:02d}", torch.randn(5 + i, 50, generator=torch.Generator().manual_seed(i)))
    two = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", PART_WRITER, str(two), str(p), "2"], env=env) for p in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with pytest.raises(CacheError, match="not complete"):  # a part still being written is refused
        meta = json.loads((part_dir(two, 1, 2) / META).read_text())
        (part_dir(two, 1, 2) / META).write_text(json.dumps({**meta, "complete": False}))
        join_parts(two, 2)
    (part_dir(two, 1, 2) / META).write_text(json.dumps(meta))
    assert join_parts(two, 2) == 20
    a, b = TeacherCache(one, fingerprint={"n_mels": 80}), TeacherCache(two, fingerprint={"n_mels": 80})
    assert sorted(a.ids()) == sorted(b.ids())
    for item in a.ids():
        assert torch.equal(a[item].log_probs, b[item].log_probs) and torch.equal(a[item].indices, b[item].indices)
    with pytest.raises(CacheError, match="another configuration"):
        TeacherCache(two, fingerprint={"n_mels": 40})
    assert not (two / "parts").exists()


def test_joining_refuses_parts_that_share_an_item(tmp_path):
    from asr_kd.distill import join_parts, part_dir

    for p in (0, 1):
        with CacheWriter(part_dir(tmp_path, p, 2), num_classes=5, k=2, fingerprint={}) as w:
            w.add("same", torch.randn(3, 5))
    with pytest.raises(CacheError, match="'same' is in both"):
        join_parts(tmp_path, 2)
    with pytest.raises(CacheError, match="part missing"):
        join_parts(tmp_path, 3)
