"""Tokenizers, text normalisation and the shared front end (frames never differ between views)."""

import numpy as np
import pytest
import torch

from asr_kd.data.features import (
    FeatureConfig,
    FrontEnd,
    GlobalCMVN,
    SpecAugmentConfig,
    cmvn_from_features,
    num_frames,
    spec_augment,
)
from asr_kd.data.sentences import SentenceGenerator
from asr_kd.data.text import normalise_text, number_to_words
from asr_kd.data.tokenizer import TokenizerError, load_tokenizer, train_tokenizer

TEXTS = [s.text for s in SentenceGenerator(seed=5).sentences(600)]


@pytest.mark.parametrize("kind", ["unigram", "bpe", "char"])
def test_tokenizer_round_trip_and_reload(kind, tmp_path):
    tok = train_tokenizer(TEXTS, tmp_path, kind=kind, vocab_size=120)
    assert tok.blank == 0
    for t in TEXTS[:50]:
        ids = tok.encode(t)
        assert ids and min(ids) >= 1 and max(ids) < tok.vocab_size  # 0 is reserved for the blank
        assert tok.decode(ids) == t
    if kind != "char":
        assert 100 <= tok.vocab_size <= 121
        assert len(tok.encode(TEXTS[0])) < len(TEXTS[0])  # pieces, not characters
    else:
        assert tok.vocab_size == len(set("".join(TEXTS))) + 1
    again = load_tokenizer(tmp_path)
    assert again.encode(TEXTS[1]) == tok.encode(TEXTS[1])
    assert sorted(tok.unknown_chars("HELLO 42 É")) == ["2", "4", "É"]
    # same options + same text: the stored tokenizer is reused, not retrained
    stamp = (tmp_path / "tokenizer.json").stat().st_mtime_ns
    train_tokenizer(TEXTS, tmp_path, kind=kind, vocab_size=120)
    assert (tmp_path / "tokenizer.json").stat().st_mtime_ns == stamp


def test_tokenizer_errors(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "nope.model")
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        train_tokenizer(TEXTS, tmp_path, kind="wordpiece")


def test_normalisation_rules():
    assert (
        normalise_text("Dr. Smith's 2nd car -- it's 100% red!") == "DR SMITH'S SECOND CAR IT'S ONE HUNDRED PERCENT RED"
    )
    assert normalise_text("'quoted' and rock'n'roll") == "QUOTED AND ROCK'N'ROLL"
    assert normalise_text("1,250 people, 3.5 km") == "ONE THOUSAND TWO HUNDRED FIFTY PEOPLE THREE POINT FIVE KM"
    assert number_to_words(2_000_013) == "two million thirteen"
    assert normalise_text("  \t ") == ""


def test_sentencepiece_unknown_chars_ignores_unk_and_control_pieces(tmp_path):
    tok = train_tokenizer(TEXTS, tmp_path, kind="unigram", vocab_size=120)
    assert "<" not in "".join(TEXTS) and ">" not in "".join(TEXTS)
    assert {"<", ">"} <= tok.unknown_chars("<unk> hello <>")


def test_load_tokenizer_folder_follows_the_last_trained_kind(tmp_path):
    train_tokenizer(TEXTS, tmp_path, kind="unigram", vocab_size=120)
    char = train_tokenizer(TEXTS, tmp_path, kind="char")
    assert not (tmp_path / "tokenizer.model").exists()  # the stale kind is removed on retraining
    again = load_tokenizer(tmp_path)
    assert type(again) is type(char) and again.vocab_size == char.vocab_size
    # even if a stale file of the other kind is there, tokenizer.json decides
    sp = train_tokenizer(TEXTS, tmp_path / "b", kind="bpe", vocab_size=120)
    (tmp_path / "b" / "tokenizer.chars.json").write_text((tmp_path / "tokenizer.chars.json").read_text())
    (tmp_path / "tokenizer.model").write_bytes((tmp_path / "b" / "tokenizer.model").read_bytes())
    assert type(load_tokenizer(tmp_path)) is type(char)
    assert type(load_tokenizer(tmp_path / "b")) is type(sp)


NORMALISATION_CASES = {
    "the 1990s": "THE NINETEEN NINETIES",
    "in the '80s": "IN THE EIGHTIES",
    "a 3D film": "A THREE D FILM",
    "an mp3 file": "AN MP THREE FILE",
    "½ cup": "ONE HALF CUP",
    "1¾ miles": "ONE AND THREE QUARTERS MILES",
    "⅔ of them": "TWO THIRDS OF THEM",
    "x² + y³": "X SQUARED Y CUBED",
    "10⁶ cells": "TEN TO THE POWER OF SIX CELLS",
    "H₂O": "H TWO O",
    "$5": "FIVE DOLLARS",
    "$1 bill": "ONE DOLLAR BILL",
    "$2.50": "TWO DOLLARS FIFTY CENTS",
    "£20": "TWENTY POUNDS",
    "€3": "THREE EUROS",
    "5€": "FIVE EUROS",
    "-7 degrees": "MINUS SEVEN DEGREES",
    "it was −3": "IT WAS MINUS THREE",
    "pages 10-20": "PAGES TEN TWENTY",
    "A-1": "A ONE",
    "hot -- 3rd day": "HOT THIRD DAY",
    "a - 5": "A FIVE",
    "1,000": "ONE THOUSAND",
    "1,000,000 people": "ONE MILLION PEOPLE",
    "the 21st century": "THE TWENTY FIRST CENTURY",
    "٣ apples": "THREE APPLES",
    "① first": "ONE FIRST",
    "café": "CAFÉ",
}


@pytest.mark.parametrize("raw", sorted(NORMALISATION_CASES))
def test_normalisation_spells_every_number(raw):
    assert normalise_text(raw) == NORMALISATION_CASES[raw]


def test_no_digit_survives_normalisation():
    import re
    import unicodedata

    cases = list(NORMALISATION_CASES) + [
        "1990s 2000s 1900s 5s 10s",
        "v2.0 10am 4x4 B52 R2D2 covid19 3rd 11th 101st 1st2nd",
        "$ 5 $5.5 £1.01 ¥300 -$5 (-2) 1e10 0.001 .5 5. 12:30 1/2 3/4",
        "12,34,567 1,0000 99,999,999,999,999,999,999",
        "⅞ ↉ ⅐ ¼¼ 2½ x¹⁰ 10⁻³ ⁻ ¹²³ ₁₂ ⑳ ⒈ ٠١٢ ۴ ४२ ໕ Ⅻ ⅲ ↀ 𝟗 ９",
    ]
    for raw in cases:
        out = normalise_text(raw)
        assert not re.search(r"\d", out), (raw, out)
        assert not any(unicodedata.category(c).startswith("N") for c in out), (raw, out)


def test_frames_never_differ_between_teacher_and_student_views():
    torch.manual_seed(0)
    lengths = torch.tensor([16000, 15999, 12345, 4001, 161, 160])
    wavs = torch.randn(len(lengths), 16000) * (torch.arange(16000)[None, :] < lengths[:, None])
    raw, frames = FrontEnd(FeatureConfig())(wavs, lengths)  # no CMVN: the features as the recipe stores them
    cmvn = cmvn_from_features({str(i): raw[i, :n] for i, n in enumerate(frames.tolist())})
    teacher = FrontEnd(FeatureConfig(), cmvn, augment=SpecAugmentConfig(freq_masks=1, time_masks=1)).train()
    student = FrontEnd(
        FeatureConfig(), cmvn, augment=SpecAugmentConfig(freq_masks=3, time_masks=4, time_width=40)
    ).train()
    plain = FrontEnd(FeatureConfig(), cmvn, augment=None).eval()
    ft, nt = teacher(wavs, lengths, generator=torch.Generator().manual_seed(1))
    fs, ns = student(wavs, lengths, generator=torch.Generator().manual_seed(2))
    fp, npl = plain(wavs, lengths)
    assert ft.shape == fs.shape == fp.shape and ft.shape[-1] == 80
    assert nt.tolist() == ns.tolist() == npl.tolist() == [num_frames(int(n)) for n in lengths]
    assert not torch.equal(ft, fs)  # the views differ in their masks only
    # one utterance alone gives the same frame count as inside a padded batch
    for i, n in enumerate(lengths.tolist()):
        f1, n1 = plain(wavs[i : i + 1, :n], lengths[i : i + 1])
        assert f1.shape[1] == n1.item() == nt[i].item()
    # padded frames are exactly zero; real frames are normalised
    assert fp[3, nt[3] :].abs().sum() == 0
    real = torch.cat([fp[i, : nt[i]] for i in range(len(lengths))])
    assert abs(real.mean().item()) < 1e-3 and abs(real.std().item() - 1) < 0.05


def test_spec_augment_masks_within_bounds():
    feats = torch.ones(1, 200, 80)
    out = spec_augment(feats, torch.tensor([150]), SpecAugmentConfig(2, 10, 2, 20), torch.Generator().manual_seed(0))
    assert out.shape == feats.shape
    assert (out[0, 150:] == 1).all()  # padded frames untouched
    masked_t = (out[0, :150] == 0).all(dim=1).sum().item()
    masked_f = (out[0, :150] == 0).all(dim=0).sum().item()
    assert 0 < masked_t <= 40 and 0 < masked_f <= 20


def test_cmvn_ignores_padding_and_round_trips(tmp_path):
    c = GlobalCMVN(2)
    c.accumulate(torch.tensor([[[1.0, 10.0], [3.0, 30.0], [1e6, 1e6]]]), torch.tensor([2]))
    c.finalize()
    assert c.mean.tolist() == [2.0, 20.0] and np.allclose(c.std.tolist(), [1.0, 10.0])
    c.save(tmp_path / "cmvn.json")
    assert GlobalCMVN.load(tmp_path / "cmvn.json").std.tolist() == c.std.tolist()


def test_cmvn_from_features_never_counts_padding():
    rng = np.random.default_rng(0)
    feats = {
        f"u{i}": torch.from_numpy(rng.standard_normal((n, 80)).astype(np.float32)) for i, n in enumerate((101, 51, 76))
    }
    cmvn = cmvn_from_features(feats)
    assert cmvn._n == sum(num_frames(n) for n in (16000, 8000, 12000))  # padding never counted
    assert cmvn.mean.shape == (80,) and (cmvn.std > 0).all()
