"""The synthetic corpus: deterministic bytes, speaker-disjoint splits, sensible audio and text."""

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.espeak import Espeak
from asr_kd.data.manifest import read_manifest
from asr_kd.data.sentences import SentenceGenerator, vocabulary_size
from asr_kd.data.synth import PRESETS, split_voices, synthesize_corpus
from asr_kd.data.validate import validate_manifest


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "synth.json"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "a"
    t0 = time.perf_counter()
    synthesize_corpus(out, "tiny", seed=3, noise_prob=0.5, reverb_prob=0.5, jobs=2, progress=False)
    return out, time.perf_counter() - t0


def test_tiny_preset_is_fast_and_valid(tiny):
    out, seconds = tiny
    assert seconds < 30
    for split, n in zip(("train", "valid", "test"), PRESETS["tiny"].utterances):
        report = validate_manifest(out / f"{split}.csv")
        assert report.ok and not report.notes, report.format()
        assert len(report.entries) == n
        for e in report.entries[:3]:
            data, sr = sf.read(e.wav)
            assert sr == 16000 and data.ndim == 1 and 0.5 < len(data) / sr < 15
            assert np.abs(data).max() > 0.05  # speech, not silence


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    out, _ = tiny
    shared = Espeak()  # dirty this process's espeak-ng state: the corpus must not depend on it
    for v in ("en-us+m1", "en-gb-x-rp+f2"):
        shared.synth("something else entirely, spoken first", voice=v)
    again = tmp_path / "b"
    synthesize_corpus(again, "tiny", seed=3, noise_prob=0.5, reverb_prob=0.5, jobs=1, progress=False)
    assert digest(out) == digest(again)  # and independent of the number of processes
    other = tmp_path / "c"
    synthesize_corpus(other, "tiny", seed=4, noise_prob=0.5, reverb_prob=0.5, jobs=2, progress=False)
    assert (other / "train.csv").read_bytes() != (out / "train.csv").read_bytes()


def test_private_espeak_starts_fresh():
    """espeak-ng's output depends on what it spoke before; a private copy does not."""
    def speak(tts):
        return [tts.synth("hello there my friend", voice="en-us+m1", rate=150)[0] for _ in range(3)]

    with Espeak(private=True) as a:
        first = speak(a)
    with Espeak(private=True) as b:
        b.synth("a different sentence first", voice="en-gb-x-rp+f2")
    with Espeak(private=True) as c:
        again = speak(c)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))


def test_splits_are_speaker_disjoint(tiny):
    out, _ = tiny
    spk = {s: {e.spk_id for e in read_manifest(out / f"{s}.csv")} for s in ("train", "valid", "test")}
    assert spk["train"] and spk["valid"] and spk["test"]
    assert not spk["train"] & spk["test"] and not spk["train"] & spk["valid"] and not spk["valid"] & spk["test"]
    # stricter: a test variant is never heard in training under any accent
    variant = lambda s: s.split("_")[-1]
    assert not {variant(s) for s in spk["train"]} & {variant(s) for s in spk["test"]}
    # the whole voice pool too, for the bigger presets
    pool = split_voices(0)
    assert len(pool["train"]) > 100 and len(pool["test"]) >= 20
    assert not {v.split("+")[1] for v in pool["train"]} & {v.split("+")[1] for v in pool["test"]}


def test_rerun_skips_complete_corpus(tiny, capsys):
    out, _ = tiny
    before = (out / "train.csv").stat().st_mtime_ns
    synthesize_corpus(out, "tiny", seed=3, noise_prob=0.5, reverb_prob=0.5, jobs=2, progress=True)
    assert "already complete" in capsys.readouterr().out
    assert (out / "train.csv").stat().st_mtime_ns == before


def test_killed_run_resumes_to_the_same_bytes(tmp_path):
    import json

    out = tmp_path / "r"
    synthesize_corpus(out, "tiny", seed=5, jobs=2, progress=False)
    want = digest(out)
    # simulate a kill: no stamp, the start marker left, some files missing
    fp = json.loads((out / "synth.json").read_text())["fingerprint"]
    (out / "synth.json").unlink()
    (out / ".synth-started.json").write_text(fp)
    wavs = sorted((out / "wav").rglob("*.wav"))
    wavs[0].unlink()
    mtimes = {w: w.stat().st_mtime_ns for w in wavs[1:]}
    synthesize_corpus(out, "tiny", seed=5, jobs=2, progress=False)
    assert digest(out) == want
    kept = sum(w.stat().st_mtime_ns == t for w, t in mtimes.items())
    assert kept >= 60 - 16  # only the chunk that lost a file was made again
    assert not (out / ".synth-started.json").exists()


def test_text_file_input(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("-dash at the start is fine\nThe 3 little pigs!\n\n", encoding="utf-8")
    synthesize_corpus(tmp_path / "t", "tiny", seed=0, utterances=(4, 1, 1), text_file=text, progress=False)
    words = {e.wrd for e in read_manifest(tmp_path / "t" / "train.csv")}
    assert words == {"DASH AT THE START IS FINE", "THE THREE LITTLE PIGS"}


def test_sentence_generator_vocabulary_and_variety():
    assert vocabulary_size() >= 1000
    sents = SentenceGenerator(seed=0).sentences(2000)
    words = {w for s in sents for w in s.text.split()}
    assert len(words) > 900  # the vocabulary is really used
    assert len({s.text for s in sents}) > 1990  # almost no repeats
    # many structures, not a handful of templates: distinct (first word, length) shapes
    assert len({(s.text.split()[0], len(s.text.split())) for s in sents}) > 150
    assert any(s.spoken.endswith("?") for s in sents) and any("," in s.spoken for s in sents)


@pytest.mark.skipif(not __import__("shutil").which("flite"), reason="flite is not installed (optional voices)")
def test_flite_voices_join_when_installed(tmp_path):
    from asr_kd.data.flite import flite_synth, flite_voices

    pool = split_voices(0, extra_voices=True)
    assert "flite+rms" in pool["test"] and "flite+awb" in pool["valid"] and "flite+slt" in pool["train"]
    assert not any(v.startswith("flite+") for vs in split_voices(0).values() for v in vs)
    assert set(flite_voices()) <= {v for vs in pool.values() for v in vs}
    a, sr = flite_synth("-a dash first", "slt", rate=170, pitch=50)
    b, _ = flite_synth("-a dash first", "slt", rate=170, pitch=50)
    slow, _ = flite_synth("-a dash first", "slt", rate=120, pitch=50)
    assert sr == 16000 and len(a) > 8000 and np.array_equal(a, b) and len(slow) > 1.2 * len(a)


def test_flite_voices_are_opt_in(tmp_path, monkeypatch):
    import inspect

    import asr_kd.data.synth as synth

    assert inspect.signature(synthesize_corpus).parameters["extra_voices"].default is False
    assert not any(v.startswith("flite+") for vs in split_voices(0).values() for v in vs)
    monkeypatch.setattr(synth, "flite_voices", lambda: [])  # as on a machine without flite
    with pytest.raises(ValueError, match="flite command is not installed"):
        synthesize_corpus(tmp_path / "c", preset="tiny", extra_voices=True, progress=False)
