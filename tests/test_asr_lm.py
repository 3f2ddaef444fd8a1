"""Lexicon and n-gram LM for beam search: a proper distribution, and flashlight reads them."""

import math

import pytest
import torch

from asr_kd.asr.decode import BeamDecoder
from asr_kd.asr.lm import EOS, UNK, decoder_tokens, ngram_prob, read_arpa, write_arpa, write_lexicon
from asr_kd.data.tokenizer import CharTokenizer

TEXTS = ["THE CAT SAT ON THE MAT", "THE DOG SAT", "A CAT ATE THE RAT", "THE RAT SAT ON A CAT", "A DOG"]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_history_gives_a_distribution(tmp_path, order):
    write_arpa(TEXTS, tmp_path / "lm.arpa", order=order)
    model = read_arpa(tmp_path / "lm.arpa")
    words = sorted({w for t in TEXTS for w in t.split()}) + [EOS, UNK]
    histories = [[], ["<s>"], ["THE"], ["SAT", "ON"], ["<s>", "A"], ["RAT", "DOG"]]  # last: never seen
    for h in histories:
        total = sum(ngram_prob(model, h[-(order - 1) :] if order > 1 else [], w) for w in words)
        assert math.isclose(total, 1.0, rel_tol=1e-4), (order, h, total)
    if order == 3:
        # seen continuations are likelier than unseen ones
        assert ngram_prob(model, ["SAT", "ON"], "THE") > ngram_prob(model, ["SAT", "ON"], "DOG")


def test_refuses_empty_text(tmp_path):
    with pytest.raises(ValueError, match="no words"):
        write_arpa(["", "  "], tmp_path / "lm.arpa")


def test_beam_search_with_lexicon_and_lm_gives_words_of_the_lexicon(tmp_path):
    tok = CharTokenizer.train(TEXTS)
    assert write_lexicon(TEXTS, tok, tmp_path / "lexicon.txt") == 9
    assert "CAT\tC A T |" in (tmp_path / "lexicon.txt").read_text()
    write_arpa(TEXTS, tmp_path / "lm.arpa", order=3)
    tokens = decoder_tokens(tok)
    assert tokens[0] == "<blank>" and tokens[tok.index[" "]] == "|"
    # peaky frames spelling "THE CAQ", one letter wrong (no such word): the lexicon fixes it
    target = "THE CAQ"
    ids = tok.encode(target)
    frames = []
    for i in ids:
        frames += [i, 0]
    lp = torch.full((1, len(frames), len(tokens)), -8.0)
    for t, i in enumerate(frames):
        lp[0, t, i] = -0.05
    lp = lp.log_softmax(-1)
    n = torch.tensor([len(frames)])
    free = BeamDecoder(tokens, beam_size=16)
    assert tok.decode(free(lp, n)[0]) == target
    constrained = BeamDecoder(
        tokens, beam_size=64, lexicon=str(tmp_path / "lexicon.txt"), lm=str(tmp_path / "lm.arpa"), lm_weight=1.0
    )
    assert constrained.words(lp, n) == ["THE CAT"]


def test_loading_the_lm_prints_no_path_and_a_failed_load_keeps_its_message(tmp_path, capfd):
    tok = CharTokenizer.train(TEXTS)
    write_lexicon(TEXTS, tok, tmp_path / "lexicon.txt")
    write_arpa(TEXTS, tmp_path / "lm.arpa", order=2)
    tokens = decoder_tokens(tok)
    BeamDecoder(tokens, lexicon=str(tmp_path / "lexicon.txt"), lm=str(tmp_path / "lm.arpa"))
    assert str(tmp_path) not in capfd.readouterr().err  # KenLM's "Reading <path>" is held back
    (tmp_path / "bad.arpa").write_text("not an arpa file\n")
    with pytest.raises(RuntimeError):
        BeamDecoder(tokens, lexicon=str(tmp_path / "lexicon.txt"), lm=str(tmp_path / "bad.arpa"))
    assert "bad.arpa" in capfd.readouterr().err  # ... unless loading fails: then it is shown
