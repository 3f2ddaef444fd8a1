"""Festival voices: listing, synthesis at 16 kHz, rate and pitch, refusals with a fix."""

import shutil

import numpy as np
import pytest

from asr_kd.data.festival import FestivalError, festival_english_voices, festival_missing, festival_synth, speakable

VOICES = festival_english_voices()
needs_festival = pytest.mark.skipif(
    not VOICES, reason="festival with an English voice is not installed (apt-get install festival festvox-kallpc16k)"
)
SENTENCE = "The quick brown fox jumps over the lazy dog."


def test_speakable_drops_what_crashes_festival():
    assert speakable("-- hello  there") == "hello there"
    assert speakable('... "Quoted," she said.') == 'Quoted," she said.'
    assert speakable("€5 please") == "5 please"
    assert speakable("...") == speakable("") == speakable("日本語") == speakable(" - ' ") == ""


@needs_festival
@pytest.mark.parametrize("voice", VOICES)
def test_festival_speaks_a_sentence_at_16khz(voice):
    wav, sr = festival_synth(SENTENCE, voice)
    assert sr == 16000 and wav.dtype == np.int16 and wav.ndim == 1
    assert 1.5 < len(wav) / sr < 6.0  # nine words at a normal rate
    assert np.abs(wav).max() > 3000  # speech, not silence
    voiced = np.abs(wav.astype(np.float32)) > 1000
    assert voiced.mean() > 0.2
    again, _ = festival_synth(SENTENCE, voice)
    assert np.array_equal(wav, again)  # deterministic
    slow, _ = festival_synth(SENTENCE, voice, rate=110)
    fast, _ = festival_synth(SENTENCE, voice, rate=230)
    assert len(slow) > 1.3 * len(wav) and len(fast) < 0.85 * len(wav)


@needs_festival
def test_festival_pitch_moves_f0_of_diphone_voices():
    diphone = [v for v in VOICES if v.endswith("_diphone")]
    if not diphone:
        pytest.skip("no festival diphone voice installed (apt-get install festvox-kallpc16k)")

    def f0(wav, sr):  # median autocorrelation pitch of the loud frames
        x = wav.astype(np.float64)
        out = []
        for i in range(0, len(x) - 1024, 512):
            fr = x[i : i + 1024] - x[i : i + 1024].mean()
            if np.abs(fr).max() < 2000:
                continue
            ac = np.correlate(fr, fr, "full")[1023:]
            lo, hi = sr // 400, sr // 60
            out.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
        return float(np.median(out))

    low, sr = festival_synth(SENTENCE, diphone[0], pitch=0)
    mid, _ = festival_synth(SENTENCE, diphone[0], pitch=50)
    high, _ = festival_synth(SENTENCE, diphone[0], pitch=100)
    assert f0(low, sr) < 0.9 * f0(mid, sr) < 0.9 * 0.9 * f0(high, sr)
    assert abs(len(low) - len(high)) < 0.05 * len(mid)  # pitch, not speed


@needs_festival
def test_festival_survives_text_that_crashes_it_and_refuses_empty_text():
    wav, sr = festival_synth("-- hello there", VOICES[0])  # festival itself segfaults on this
    assert len(wav) / sr > 0.3 and np.abs(wav).max() > 1000
    for text in ("...", "", "日本語", "-"):
        with pytest.raises(FestivalError, match=rf"festival voice '{VOICES[0]}' cannot speak .*--extra-voices no"):
            festival_synth(text, VOICES[0])


@needs_festival
def test_festival_unknown_voice_names_the_fix():
    with pytest.raises(
        FestivalError,
        match=r"festival has no voice 'nobody_diphone'; installed English voices: .*"
        r"apt-get install festvox-",
    ):
        festival_synth("hello", "nobody_diphone")
    with pytest.raises(FestivalError, match="not a voice name"):
        festival_synth("hello", "kal_diphone) (quit")


def test_missing_festival_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    assert festival_english_voices() == []
    assert "apt-get install festival festvox-" in festival_missing()
    with pytest.raises(
        FestivalError,
        match=r"festival voice 'kal_diphone': the festival command is not installed "
        r"\(apt-get install festival",
    ):
        festival_synth("hello", "kal_diphone")
