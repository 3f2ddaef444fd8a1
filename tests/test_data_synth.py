"""The synthetic corpus: deterministic bytes, speaker-disjoint splits, sensible audio and text."""

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.espeak import Espeak
from asr_kd.data.manifest import read_manifest
from asr_kd.data.sentences import SentenceGenerator, vocabulary_size
from asr_kd.data.synth import PRESETS, split_voices, synth_options, synthesize_corpus, voice_speaker
from asr_kd.data.validate import validate_manifest


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "synth.json"
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "a"
    synthesize_corpus(out, "tiny", seed=3, noise_prob=0.5, reverb_prob=0.5, jobs=2, progress=False)
    return out, None


def test_tiny_preset_is_valid(tiny):
    """Its speed is measured by `python tools/bench_synth.py --preset tiny`, not asserted here."""
    out, _ = tiny
    for split, n in zip(("train", "valid", "test"), PRESETS["tiny"].utterances, strict=False):
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
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=False))


def test_splits_are_speaker_disjoint(tiny):
    out, _ = tiny
    rows = {s: read_manifest(out / f"{s}.csv") for s in ("train", "valid", "test")}
    spk = {s: {e.spk_id for e in es} for s, es in rows.items()}
    assert spk["train"] and spk["valid"] and spk["test"]
    assert not spk["train"] & spk["test"] and not spk["train"] & spk["valid"] and not spk["valid"] & spk["test"]
    # stricter: a test variant (or recorded person) is never heard in training under any accent or engine
    person = {s: {voice_speaker(e.extra["voice"]) for e in es} for s, es in rows.items()}
    assert not person["train"] & person["test"] and not person["train"] & person["valid"]
    # the whole voice pool too, for the bigger presets
    pool = split_voices(0)
    assert len(pool["train"]) > 100 and len(pool["test"]) >= 20
    assert not {v.split("+")[1] for v in pool["train"]} & {v.split("+")[1] for v in pool["test"]}


def test_rerun_skips_complete_corpus(tiny, caplog):
    caplog.set_level(logging.INFO, logger="asr_kd")
    out, _ = tiny
    before = (out / "train.csv").stat().st_mtime_ns
    synthesize_corpus(out, "tiny", seed=3, noise_prob=0.5, reverb_prob=0.5, jobs=2, progress=True)
    assert "already complete" in caplog.text
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


EXTRA = [
    "flite+kal16",
    "flite+awb",
    "flite+rms",
    "flite+slt",
    "festival+kal_diphone",
    "festival+ked_diphone",
    "festival+cmu_us_slt_arctic_hts",
    "festival+cmu_us_awb_cg",
    "festival+cmu_us_rms_cg",
    "festival+rab_diphone",
]


def test_split_voices_keeps_extra_voices_speaker_disjoint():
    from asr_kd.data.espeak import available_voices

    pool = split_voices(0, voices=available_voices() + EXTRA)
    where = {v: s for s, vs in pool.items() for v in vs}
    assert sorted(where) == sorted(available_voices() + EXTRA)  # every voice placed once
    # one person under two engines is one speaker, in one split
    assert where["flite+kal16"] == where["festival+kal_diphone"] == "train"
    assert where["flite+slt"] == where["festival+cmu_us_slt_arctic_hts"] == "train"
    assert where["flite+rms"] == where["festival+cmu_us_rms_cg"] == "test"
    assert where["flite+awb"] == where["festival+cmu_us_awb_cg"] == "valid"
    assert where["festival+ked_diphone"] == "test" and where["festival+rab_diphone"] == "train"
    people = {s: {voice_speaker(v) for v in vs} for s, vs in pool.items()}
    assert not people["train"] & people["test"] and not people["train"] & people["valid"]
    assert not people["valid"] & people["test"]
    assert voice_speaker("en-gb-x-rp+m3") == "m3" and voice_speaker("festival+nitech_us_bdl_arctic_hts") == "bdl"
    # the default pool is espeak-ng only, the same on every machine
    assert not any("+" in v and v.split("+")[0] in ("flite", "festival") for vs in split_voices(0).values() for v in vs)


def _nothing_installed(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)  # as on a machine without flite and festival


def test_auto_without_extra_engines_is_espeak_only(tmp_path, monkeypatch, caplog):
    import inspect
    import json

    import asr_kd.data.synth as synth
    import asr_kd.data.synth_voices as synth_voices

    caplog.set_level(logging.INFO, logger="asr_kd")
    assert inspect.signature(synthesize_corpus).parameters["extra_voices"].default == "auto"
    _nothing_installed(monkeypatch)
    out = tmp_path / "c"
    synthesize_corpus(out, "tiny", seed=1, utterances=(3, 1, 1), jobs=1, progress=False)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["options"]["extra_voices"] == []
    voices = [v for vs in meta["options"]["voices"].values() for v in vs]
    assert voices and all(v.split("+")[0] not in ("flite", "festival") for v in voices)
    # the same corpus as extra_voices=False: already complete, nothing to do
    caplog.clear()
    synthesize_corpus(out, "tiny", seed=1, utterances=(3, 1, 1), jobs=1, progress=True, extra_voices=False)
    assert "already complete" in caplog.text
    # once a voice is installed, "auto" gives other options: the corpus is not taken as complete
    monkeypatch.setattr(synth_voices, "festival_voices", lambda: ["festival+kal_diphone"])
    opts = synth_options("tiny", seed=1, utterances=(3, 1, 1))
    assert opts.extra_voices == ["festival+kal_diphone"] and not synth.is_complete(out, opts)
    assert synth.is_complete(out, synth_options("tiny", seed=1, utterances=(3, 1, 1), extra_voices=False))


def test_extra_voices_true_requires_them(tmp_path, monkeypatch):
    _nothing_installed(monkeypatch)
    with pytest.raises(ValueError) as err:
        synthesize_corpus(tmp_path / "c", preset="tiny", extra_voices=True, progress=False)
    msg = str(err.value)
    assert "flite command is not installed (apt-get install flite)" in msg
    assert "festival command is not installed (apt-get install festival festvox-" in msg
    assert "--extra-voices auto" in msg and not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="extra_voices must be"):
        synthesize_corpus(tmp_path / "c", preset="tiny", extra_voices="sometimes", progress=False)


def test_cli_extra_voices_flag(tmp_path, monkeypatch, capsys):
    from asr_kd.cli import main

    _nothing_installed(monkeypatch)
    args = ["synth", str(tmp_path / "c"), "--preset", "tiny", "--utterances", "2", "1", "1", "--jobs", "1"]
    assert main(args) == 0
    assert "extra voices: none installed (apt-get install flite festival festvox-" in capsys.readouterr().out
    assert main(args + ["--extra-voices", "yes"]) != 0
    assert "apt-get install flite" in capsys.readouterr().err
    assert main(args + ["--flite"]) != 0  # deprecated alias of --extra-voices yes
    assert "--flite is deprecated" in capsys.readouterr().err


def _installed_extra_voices():
    from asr_kd.data.synth import extra_voice_pool

    return extra_voice_pool("auto")


@pytest.mark.skipif(not _installed_extra_voices(), reason="neither flite nor festival is installed (optional voices)")
def test_extra_voices_same_seed_same_bytes(tmp_path, monkeypatch):
    import json

    import asr_kd.data.synth as synth

    # few espeak-ng voices, so that the installed extra voices are picked
    monkeypatch.setattr(synth, "available_voices", lambda: ["en-us+m1", "en-us+m3", "en-us+m6"])
    kw: dict[str, Any] = dict(utterances=(8, 3, 3), noise_prob=0.5, progress=False)
    synthesize_corpus(tmp_path / "a", "tiny", seed=2, jobs=2, **kw)
    synthesize_corpus(tmp_path / "b", "tiny", seed=2, jobs=1, **kw)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    meta = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert meta["options"]["extra_voices"] == _installed_extra_voices()
    used = {e.extra["voice"] for s in ("train", "valid", "test") for e in read_manifest(tmp_path / "a" / f"{s}.csv")}
    extra = {v for v in used if v.split("+")[0] in ("flite", "festival")}
    assert extra, used
    for s in ("train", "valid", "test"):
        for e in read_manifest(tmp_path / "a" / f"{s}.csv"):
            if e.extra["voice"] in extra:
                data, sr = sf.read(e.wav)
                assert sr == 16000 and 0.5 < len(data) / sr < 15 and np.abs(data).max() > 0.05


@pytest.mark.skipif(not __import__("shutil").which("flite"), reason="flite is not installed (optional voices)")
def test_flite_voices_join_when_installed(tmp_path):
    from asr_kd.data.flite import FliteError, flite_synth, flite_voices

    pool = split_voices(0, extra_voices="auto")
    assert "flite+rms" in pool["test"] and "flite+awb" in pool["valid"] and "flite+slt" in pool["train"]
    assert set(flite_voices()) <= {v for vs in pool.values() for v in vs}
    a, sr = flite_synth("-a dash first", "slt", rate=170, pitch=50)
    b, _ = flite_synth("-a dash first", "slt", rate=170, pitch=50)
    slow, _ = flite_synth("-a dash first", "slt", rate=120, pitch=50)
    assert sr == 16000 and len(a) > 8000 and np.array_equal(a, b) and len(slow) > 1.2 * len(a)
    with pytest.raises(FliteError, match="'slt' cannot speak '...'"):
        flite_synth("...", "slt")
