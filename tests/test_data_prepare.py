"""Each preparer on a small tree built here from synthesised speech."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.audio import resample
from asr_kd.data.espeak import Espeak
from asr_kd.data.manifest import read_manifest
from asr_kd.data.prepare import PrepareError, parse_mapping, prepare
from asr_kd.data.validate import validate_manifest

# the console script's entry point (python -m asr_kd.cli would run a second copy of the module)
CLI = [sys.executable, "-c", "import sys; from asr_kd.cli import main; sys.exit(main())"]
SENTENCES = ["Hello there, my friend.", "The 3 dogs ran home!", "It's a quiet morning.", "Open the door please?"]


@pytest.fixture()
def logged(caplog):
    """``logged()``: the lines the data layer logged since the last call (INFO and up)."""
    caplog.set_level(logging.INFO, logger="asr_kd")

    def take() -> str:
        text = "\n".join(r.getMessage() for r in caplog.records)
        caplog.clear()
        return text

    return take


@pytest.fixture(scope="module")
def speech():
    """Four short utterances of synthetic speech at 16 kHz (float32)."""
    tts = Espeak()
    out = []
    for i, s in enumerate(SENTENCES):
        wav, sr = tts.synth(s, voice=["en-us+m1", "en-gb-x-rp+f2"][i % 2], rate=190)
        out.append(resample(wav.astype(np.float32) / 32768, sr, 16000))
    return out


def write(path: Path, x: np.ndarray, fmt: str | None = None, sr: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, format=fmt)


def test_librispeech(tmp_path, speech, logged):
    src = tmp_path / "LibriSpeech"
    for split, spk in (("train-clean-5", "19"), ("dev-clean-2", "84")):
        ch = src / split / spk / "198"
        lines = []
        for i, (x, s) in enumerate(zip(speech, SENTENCES, strict=False)):
            uid = f"{spk}-198-{i:04d}"
            write(ch / f"{uid}.flac", x)
            lines.append(f"{uid} {s.upper()}")
        lines.append(f"{spk}-198-0099 THIS ONE HAS NO AUDIO")
        (ch / f"{spk}-198.trans.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "manifests"
    result = prepare("librispeech", src, out)
    assert sorted(result) == ["dev-clean-2", "train-clean-5"]
    rows = read_manifest(result["train-clean-5"])
    assert [r.id for r in rows] == [f"19-198-{i:04d}" for i in range(4)]
    assert {r.spk_id for r in rows} == {"19"}
    assert rows[1].wrd == "THE THREE DOGS RAN HOME"
    for r, x in zip(rows, speech, strict=False):
        assert r.duration is not None and abs(r.duration - len(x) / 16000) < 1e-3
    assert validate_manifest(result["dev-clean-2"]).ok
    assert "no audio 84-198-0099.flac" in logged()
    # second run: complete and same options -> skipped; other options -> redone
    mtime = result["train-clean-5"].stat().st_mtime_ns
    prepare("librispeech", src, out)
    assert "nothing to do" in logged()
    assert result["train-clean-5"].stat().st_mtime_ns == mtime
    prepare("librispeech", src, out, normalise=False)
    assert read_manifest(result["train-clean-5"])[1].wrd == "THE 3 DOGS RAN HOME!"
    # one split folder works too
    one = prepare("librispeech", src / "dev-clean-2", tmp_path / "one")
    assert list(one) == ["dev-clean-2"]


def test_commonvoice(tmp_path, speech):
    src = tmp_path / "cv-corpus" / "en"
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\n"
    for name, idx in (("train.tsv", [0, 1]), ("dev.tsv", [2]), ("test.tsv", [3])):
        rows = []
        for i in idx:
            clip = f"common_voice_en_{i}.mp3"
            write(src / "clips" / clip, speech[i], fmt="MP3")
            rows.append(f"client{i % 2}abcdef0123456789\t{clip}\ts{i}\t{SENTENCES[i]}\t\t2\t0\t\t\t")
        if name == "train.tsv":
            rows.append("client9\tmissing.mp3\ts9\tGone.\t\t2\t0\t\t\t")
        (src / name).write_text(header + "\n".join(rows) + "\n")
    result = prepare("commonvoice", src, tmp_path / "out")
    assert sorted(result) == ["test", "train", "valid"]
    train = read_manifest(result["train"])
    assert [r.id for r in train] == ["common_voice_en_0", "common_voice_en_1"]
    assert train[0].wrd == "HELLO THERE MY FRIEND" and train[0].spk_id == "client0abcdef012"
    assert read_manifest(result["test"])[0].wrd == "OPEN THE DOOR PLEASE"
    report = validate_manifest(result["train"])
    assert report.ok, report.format()
    with pytest.raises(PrepareError, match="train.tsv"):
        prepare("commonvoice", tmp_path, tmp_path / "x")


def test_folder_nested_with_speaker_disjoint_splits(tmp_path, speech):
    src = tmp_path / "recordings"
    for s in range(6):
        for i in range(2):
            d = src / f"group{s % 2}" / f"speaker{s}"
            write(d / f"take{i}.{'flac' if i else 'wav'}", speech[(s + i) % 4])
            (d / f"take{i}.txt").write_text(SENTENCES[(s + i) % 4] + "\n")
    write(src / "group0" / "orphan.wav", speech[0])  # no transcript: skipped
    result = prepare("folder", src, tmp_path / "all")
    rows = read_manifest(result["all"])
    assert len(rows) == 12 and len({r.id for r in rows}) == 12
    assert {r.spk_id for r in rows} == {"group0", "group1"}  # default: the first folder below SRC
    deep = read_manifest(prepare("folder", src, tmp_path / "deep", speaker_depth=2)["all"])
    assert {r.spk_id for r in deep} == {f"group{s % 2}_speaker{s}" for s in range(6)}
    assert validate_manifest(result["all"]).ok
    split = prepare("folder", src, tmp_path / "split", valid=0.2, test=0.2, seed=1, speaker_depth=2)
    spk = {k: {r.spk_id for r in read_manifest(p)} for k, p in split.items()}
    assert sorted(spk) == ["test", "train", "valid"]
    assert not (spk["train"] & spk["test"]) and not (spk["train"] & spk["valid"]) and not (spk["valid"] & spk["test"])
    assert sum(len(v) for v in spk.values()) == 6


def test_csv_and_jsonl_with_column_mapping(tmp_path, speech):
    for i, x in enumerate(speech):
        write(tmp_path / "audio" / f"a{i}.wav", x)
    src = tmp_path / "theirs.csv"
    src.write_text(
        "utt,path,text,speaker,gender\n"
        + "\n".join(f'u{i},audio/a{i}.wav,"{s}",spk{i % 2},f' for i, s in enumerate(SENTENCES))
        + "\n"
    )
    result = prepare(
        "csv", src, tmp_path / "ours.csv", mapping=parse_mapping("ID=utt,wav=path,wrd=text,spk_id=speaker")
    )
    rows = read_manifest(result["theirs"])
    assert [r.id for r in rows] == ["u0", "u1", "u2", "u3"]
    assert rows[0].extra == {"gender": "f"} and rows[1].wrd == "THE THREE DOGS RAN HOME"
    assert validate_manifest(result["theirs"]).ok
    js = tmp_path / "theirs.jsonl"
    js.write_text('{"file": "audio/a0.wav", "sentence": "Hi 2 you"}\n')
    rows = read_manifest(prepare("jsonl", js, tmp_path / "j", mapping={"wav": "file", "wrd": "sentence"})["theirs"])
    assert rows[0].id == "a0" and rows[0].wrd == "HI TWO YOU"
    with pytest.raises(PrepareError, match="not in the file"):
        prepare("csv", src, tmp_path / "bad.csv", mapping={"wrd": "nope"})
    with pytest.raises(PrepareError, match="OURS=THEIRS"):
        parse_mapping("wrd")


@pytest.mark.slow
def test_cli_prepare_refuses_bad_input_without_traceback(tmp_path):
    run = lambda *a: subprocess.run([*CLI, *a], capture_output=True, text=True, timeout=120)
    out = run("prepare", "librispeech", str(tmp_path / "nowhere"), str(tmp_path / "o"))
    assert out.returncode == 2 and "not found" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "empty").mkdir()
    out = run("prepare", "folder", str(tmp_path / "empty"), str(tmp_path / "o"))
    assert out.returncode == 2 and "no audio files" in out.stderr and "Traceback" not in out.stderr
    out = run("synth", str(tmp_path / "s"), "--noise", "2")
    assert out.returncode == 2 and "between 0 and 1" in out.stderr


LATIN1 = "CAF\u00c9 NOIR".encode("latin-1")


def test_text_that_is_not_utf8_is_skipped_not_mangled(tmp_path, speech, logged):
    # csv
    for i, x in enumerate(speech[:2]):
        write(tmp_path / "audio" / f"a{i}.wav", x)
    src = tmp_path / "theirs.csv"
    src.write_bytes(b"path,text\naudio/a0.wav," + LATIN1 + b"\naudio/a1.wav,CAF\xc3\x89 OK\n")
    rows = read_manifest(prepare("csv", src, tmp_path / "c.csv", mapping={"wav": "path", "wrd": "text"})["theirs"])
    assert [r.wrd for r in rows] == ["CAFÉ OK"]
    err = logged()
    assert "theirs.csv row 1: not UTF-8" in err
    # librispeech
    ch = tmp_path / "LS" / "train" / "19" / "198"
    for i in range(2):
        write(ch / f"19-198-{i:04d}.flac", speech[i])
    (ch / "19-198.trans.txt").write_bytes(b"19-198-0000 " + LATIN1 + b"\n19-198-0001 GOOD LINE\n")
    rows = read_manifest(prepare("librispeech", tmp_path / "LS", tmp_path / "ls")["train"])
    assert [r.wrd for r in rows] == ["GOOD LINE"]
    assert "19-198.trans.txt:1: not UTF-8" in logged()
    # commonvoice
    cv = tmp_path / "cv"
    for i in range(2):
        write(cv / "clips" / f"c{i}.wav", speech[i])
    (cv / "train.tsv").write_bytes(b"client_id\tpath\tsentence\nx\tc0.wav\t" + LATIN1 + b"\ny\tc1.wav\tFINE\n")
    rows = read_manifest(prepare("commonvoice", cv, tmp_path / "cvo")["train"])
    assert [r.wrd for r in rows] == ["FINE"]
    assert "train.tsv line 2: not UTF-8" in logged()


def test_csv_skips_duplicate_ids_and_empty_transcripts_and_derives_unique_ids(tmp_path, speech, logged):
    for d in ("a", "b"):
        for i, x in enumerate(speech[:2]):
            write(tmp_path / d / f"take{i}.wav", x)
    src = tmp_path / "in.csv"
    src.write_text(
        "ID,wav,wrd\n"
        "u1,a/take0.wav,HELLO\n"
        "u1,a/take1.wav,AGAIN\n"  # duplicate ID
        "u2,a/take1.wav,!!\n"  # empty after normalisation
        ",a/take1.wav,ONE\n"  # ID from the file name: take1 is in a/ and b/
        ",b/take1.wav,TWO\n"
        ",b/take0.wav,THREE\n"
    )
    rows = read_manifest(prepare("csv", src, tmp_path / "out.csv")["in"])
    assert [r.id for r in rows] == ["u1", "a_take1", "b_take1", "take0"]
    assert all(Path(r.wav).is_absolute() and Path(r.wav).exists() for r in rows)
    err = logged()
    assert "row 2: duplicate ID 'u1'" in err and "row 3: empty transcript" in err


def test_rerun_with_splits_removes_the_old_all_csv(tmp_path, speech):
    src = tmp_path / "rec"
    for s in range(4):
        write(src / f"spk{s}" / "x.wav", speech[s])
        (src / f"spk{s}" / "x.txt").write_text(SENTENCES[s])
    out = tmp_path / "out"
    assert set(prepare("folder", src, out)) == {"all"}
    assert (out / "all.csv").exists()
    split = prepare("folder", src, out, valid=0.25, test=0.25)
    assert set(split) == {"train", "valid", "test"}
    assert not (out / "all.csv").exists() and all(p.exists() for p in split.values())


def test_folder_given_a_file_says_so(tmp_path, speech):
    write(tmp_path / "one.wav", speech[0])
    with pytest.raises(PrepareError, match="a file, not a folder"):
        prepare("folder", tmp_path / "one.wav", tmp_path / "o")
