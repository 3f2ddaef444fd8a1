"""The manifest validator: every bad case is reported with its row and a fix; training refuses them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.manifest import Entry, ManifestError, load_manifest, read_manifest, write_manifest
from asr_kd.data.validate import validate_manifest

# the console script's entry point (python -m asr_kd.cli would run a second copy of the module)
CLI = [sys.executable, "-c", "import sys; from asr_kd.cli import main; sys.exit(main())"]
SR = 16000


def tone(seconds: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture()
def bad_corpus(tmp_path):
    """A CSV manifest holding every bad case of the issue, one per row, plus good rows."""
    d = tmp_path / "wav"
    d.mkdir()
    sf.write(d / "good.wav", tone(1.0), SR)
    sf.write(d / "good2.flac", tone(0.8), SR)
    (d / "notaudio.wav").write_text("this is not audio\n")
    sf.write(d / "full.wav", tone(1.0), SR)
    b = (d / "full.wav").read_bytes()
    (d / "trunc.wav").write_bytes(b[: len(b) // 2])
    sf.write(d / "full.flac", tone(1.0), SR)
    b = (d / "full.flac").read_bytes()
    (d / "trunc.flac").write_bytes(b[: len(b) // 2])
    sf.write(d / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(d / "hifi.wav", tone(1.0, 44100, channels=2), 44100)
    rows = [  # (ID, duration, wav, spk, wrd) -> expected problem (substring) or None
        ("u01", "1.0", "$data_root/wav/good.wav", "s1", "HELLO WORLD", None),
        ("u02", "1.0", "$data_root/wav/missing.wav", "s1", "HELLO", "not found"),
        ("u03", "1.0", "$data_root/wav/notaudio.wav", "s1", "HELLO", "not an audio file"),
        ("u04", "1.0", "$data_root/wav/trunc.wav", "s1", "HELLO", "truncated"),
        ("u05", "1.0", "$data_root/wav/trunc.flac", "s1", "HELLO", "truncated"),
        ("u06", "0.5", "$data_root/wav/empty.wav", "s1", "HELLO", "zero-length"),
        ("u01", "1.0", "$data_root/wav/good.wav", "s1", "HELLO", "duplicate ID"),
        ("u08", "0", "$data_root/wav/good.wav", "s1", "HELLO", "non-positive duration"),
        ("u09", "-2", "$data_root/wav/good.wav", "s1", "HELLO", "non-positive duration"),
        ("u10", "5.0", "$data_root/wav/good.wav", "s1", "HELLO", "wrong duration"),
        ("u11", "abc", "$data_root/wav/good.wav", "s1", "HELLO", "not a number"),
        ("u12", "1.0", "$data_root/wav/good.wav", "s1", "   ", "empty transcript"),
        ("u13", "1.0", "$data_root/wav/good.wav", "s1", "LATIN1", "not valid UTF-8"),
        ("u14", "1.0", "$data_root/wav/good.wav", "s1", "HELLO 42 \u2603!", "cannot encode"),
        ("u15", "1.0", "$data_root/wav/hifi.wav", "s2", "FINE BUT RESAMPLED", None),
        ("u16", "0.8", "$data_root/wav/good2.flac", "s2", "ALSO FINE", None),
    ]
    lines = [b"ID,duration,wav,spk_id,wrd"]
    for uid, dur, wav, spk, wrd, _ in rows:
        text = f"{uid},{dur},{wav},{spk},{wrd}".encode()
        if wrd == "LATIN1":
            text = f"{uid},{dur},{wav},{spk},".encode() + "CAF\u00c9".encode("latin-1")
        lines.append(text)
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected = {i: want for i, (*_, want) in enumerate(rows, start=1)}
    return path, expected


def test_every_bad_case_is_reported_with_its_row(bad_corpus):
    path, expected = bad_corpus
    report = validate_manifest(path)
    by_row: dict[int, list] = {}
    for p in report.errors:
        by_row.setdefault(p.row, []).append(p)
    for row, want in expected.items():
        if want is None:
            assert row not in by_row, f"row {row} should be clean: {[p.message for p in by_row.get(row, [])]}"
        else:
            msgs = [p.message for p in by_row.get(row, [])]
            assert any(want in m for m in msgs), f"row {row}: expected {want!r}, got {msgs}"
            assert all(p.fix for p in by_row[row]), f"row {row}: every error needs a fix"
            assert all(p.line == row + 1 for p in by_row[row])
    # the resampled / downmixed file is a note, not an error
    notes = [p for p in report.notes if p.row == 15]
    assert notes and "resampled to 16000" in notes[0].message and "downmixed" in notes[0].message
    # the fix for a bad duration gives the right value
    assert any("set duration to 1.000" in p.fix for p in by_row[10] + by_row[8])
    text = report.format()
    assert "row 2 (line 3, ID 'u02')" in text and "fix:" in text
    assert not report.ok


def test_load_manifest_refuses_then_skips(bad_corpus, caplog):
    path, expected = bad_corpus
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    msg = str(err.value)
    assert "row 4" in msg and "skip" in msg
    caplog.clear()
    kept = load_manifest(path, skip_bad=True)
    logged = [r.getMessage() for r in caplog.records if r.name == "asr_kd.data.manifest"]
    assert sorted(e.id for e in kept) == ["u01", "u15", "u16"]
    assert "skipped 13 bad row(s)" in logged[0] and "row 13" in logged[0]


@pytest.mark.slow
def test_cli_validate_reports_without_traceback(bad_corpus):
    path, _ = bad_corpus
    out = subprocess.run([*CLI, "validate", "--quiet", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    assert "row 3 (line 4, ID 'u03')" in out.stdout
    missing = subprocess.run(
        [*CLI, "validate", "--quiet", str(path) + ".nope"], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 1 and "manifest not found" in missing.stdout and "Traceback" not in missing.stderr


def test_jsonl_manifest_and_missing_columns(tmp_path):
    sf.write(tmp_path / "a.wav", tone(0.5), SR)
    rows = [
        {"ID": "a", "duration": 0.5, "wav": "$data_root/a.wav", "spk_id": "s", "wrd": "HI"},
        {"ID": "b", "duration": 0.5, "wav": "$data_root/a.wav", "spk_id": "s", "wrd": ""},
    ]
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    report = validate_manifest(p)
    assert [e.row for e in report.errors] == [2]
    assert any("line 3" in e and "JSON" in e for e in report.file_errors)
    bad = tmp_path / "cols.csv"
    fields = tmp_path / "fields.csv"
    fields.write_text("ID,duration,wav,spk_id,wrd\na,0.5,$data_root/a.wav,s,HI\nb,0.5,$data_root/a.wav,s,HI, THERE\n")
    report = validate_manifest(fields)
    assert [(e.row, e.message) for e in report.errors] == [(2, "6 fields, the header has 5")]
    assert [e.id for e in load_manifest(fields, skip_bad=True)] == ["a"]
    bad.write_text("utt,path,text\nx,a.wav,HI\n")
    report = validate_manifest(bad, check_audio=False)
    assert any("missing column(s) ID, duration, wav, spk_id, wrd" in e for e in report.file_errors)
    with pytest.raises(ManifestError, match="--map"):
        load_manifest(bad)
    assert not report.problems  # no flood of row errors for a file that is not a manifest
    report = validate_manifest(tmp_path / "a.wav")
    assert not report.ok and "binary file" in report.file_errors[0] and not report.problems


def test_write_read_round_trip(tmp_path):
    entries = [Entry("u1", 1.25, "$data_root/x, y.wav", "s1", 'SAY "HI"', extra={"gender": "f"})]
    for name in ("m.csv", "m.jsonl"):
        write_manifest(tmp_path / name, entries)
        back = read_manifest(tmp_path / name)
        assert back[0].wrd == 'SAY "HI"' and back[0].duration == 1.25 and back[0].extra == {"gender": "f"}
        assert back[0].wav == str(tmp_path / "x, y.wav")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("dur", ["nan", "NaN", "inf", "-inf"])
@pytest.mark.parametrize("check_audio", [True, False])
def test_non_finite_duration_is_an_error(tmp_path, dur, check_audio):
    sf.write(tmp_path / "a.wav", tone(0.5), SR)
    p = tmp_path / "m.csv"
    p.write_text(f"ID,duration,wav,spk_id,wrd\na,{dur},$data_root/a.wav,s,HI\n")
    report = validate_manifest(p, check_audio=check_audio)
    assert not report.ok
    assert [e.row for e in report.errors] == [1] and "not a finite number" in report.errors[0].message
    if check_audio:
        assert "0.500" in report.errors[0].fix  # the fix gives the audio's length
    if dur == "inf" and not check_audio:  # once through the command line (a subprocess is slow)
        out = subprocess.run(
            [*CLI, "validate", "--quiet", "--no-audio", str(p)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 1 and "finite" in out.stdout


@pytest.mark.parametrize(
    "name,text",
    [
        ("m.csv", "ID,duration,wav,spk_id,wrd\n"),
        ("m.csv", "ID,duration,wav,spk_id,wrd\n\n\n"),
        ("m.jsonl", ""),
        ("m.jsonl", "\n\n"),
    ],
)
def test_manifest_without_rows_fails_validation(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    report = validate_manifest(p)
    assert not report.ok and any("no rows" in e for e in report.file_errors)
    with pytest.raises(ManifestError):
        load_manifest(p)
    if text.count("\n") == 1 and name == "m.csv":  # once through the command line (a subprocess is slow)
        out = subprocess.run([*CLI, "validate", "--quiet", str(p)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and "no rows" in out.stdout


def test_default_charset_takes_what_the_normaliser_keeps(tmp_path):
    from asr_kd.data.text import normalise_text

    sf.write(tmp_path / "a.wav", tone(0.5), SR)
    p = tmp_path / "m.csv"
    good = normalise_text("Café über Ωmega, don't")
    p.write_text(
        f"ID,duration,wav,spk_id,wrd\na,0.5,$data_root/a.wav,s,{good}\nb,0.5,$data_root/a.wav,s,lower case\n",
        encoding="utf-8",
    )
    report = validate_manifest(p)
    assert good == "CAFÉ ÜBER ΩMEGA DON'T"
    assert [e.row for e in report.errors] == [2]
    assert "--tokenizer" in report.errors[0].fix and "normalise" in report.errors[0].fix


def test_data_root_paths_stay_right_when_written_elsewhere(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "a.wav", tone(0.5), SR)
    write_manifest(src / "m.csv", [Entry("a", 0.5, "$data_root/a.wav", "s", "HI")])
    rows = read_manifest(src / "m.csv")
    write_manifest(src / "same.csv", rows)  # same folder: $data_root kept
    assert "$data_root/a.wav" in (src / "same.csv").read_text()
    write_manifest(tmp_path / "other" / "m.csv", rows)  # another folder: the absolute path
    back = read_manifest(tmp_path / "other" / "m.csv")
    assert back[0].wav == str(src / "a.wav") and "$data_root" not in (tmp_path / "other" / "m.csv").read_text()
