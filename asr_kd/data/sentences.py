"""An English sentence generator: a real vocabulary and a small phrase-structure grammar.

The vocabulary (``words_en.txt``, shipped with the package) has ~1,150 base words in word
classes (people, animals, things, places, food, adjectives, adverbs, prepositions,
transitive and intransitive verbs ...); nouns inflect for number and verbs for tense,
person and aspect. Sentences are built from a grammar, not from fixed templates:
statements in five tenses, modal verbs, negation, yes/no and wh-questions, prepositional
phrases, relative clauses, time phrases and clauses joined by "and", "but", "because",
"when" or "so". Output is deterministic for a seed.

Each sentence comes back twice: ``spoken`` (with punctuation, for the synthesiser) and
``text`` (the transcript, normalised as :func:`asr_kd.data.text.normalise_text` would).

Example
-------
>>> from asr_kd.data.sentences import SentenceGenerator
>>> gen = SentenceGenerator(seed=1)
>>> s = gen.sentence()
>>> s.text == s.text.upper() and len(s.text.split()) >= 3
True
>>> SentenceGenerator(seed=1).sentence() == SentenceGenerator(seed=1).sentence()
True
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .text import normalise_text

_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty"]
_HOURS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]


@dataclass(frozen=True)
class Sentence:
    """One generated sentence: ``spoken`` for the synthesiser, ``text`` for the transcript."""

    spoken: str
    text: str


@dataclass(frozen=True)
class Noun:
    sg: str
    pl: str


@dataclass(frozen=True)
class Verb:
    base: str
    past: str
    ing: str
    third: str


def _plural(w: str) -> str:
    if w.endswith(("s", "sh", "ch", "x", "z")):
        return w + "es"
    if w.endswith("y") and w[-2:-1] not in "aeiou":
        return w[:-1] + "ies"
    return w + "s"


def _third(w: str) -> str:
    if w in ("go", "do"):
        return w + "es"
    return _plural(w)


def _past(w: str) -> str:
    if w.endswith("e"):
        return w + "d"
    if w.endswith("y") and w[-2:-1] not in "aeiou":
        return w[:-1] + "ied"
    return w + "ed"


def _ing(w: str) -> str:
    if w.endswith("ie"):
        return w[:-2] + "ying"
    if w.endswith("e") and not w.endswith(("ee", "ye", "oe")) and len(w) > 2:
        return w[:-1] + "ing"
    return w + "ing"


@lru_cache(maxsize=4)
def load_vocabulary(name: str = "words_en.txt") -> dict[str, list]:
    """Parse the shipped word list into ``{class: [str | Noun | Verb]}``."""
    text = resources.files("asr_kd.data").joinpath(name).read_text(encoding="utf-8")
    classes: dict[str, list] = {}
    current = ""
    word: str | Noun | Verb
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            classes.setdefault(current, [])
            continue
        for item in line.split():
            parts = item.split("/")
            if current in ("person", "animal", "thing", "place", "food", "mass", "abstract", "time"):
                word = Noun(parts[0], parts[1] if len(parts) > 1 and parts[1] else _plural(parts[0]))
            elif current in ("vt", "vi"):
                base = parts[0]
                past = parts[1] if len(parts) > 1 and parts[1] else _past(base)
                ing = parts[2] if len(parts) > 2 and parts[2] else _ing(base)
                word = Verb(base, past, ing, _third(base))
            else:
                word = parts[0]
            if word not in classes[current]:
                classes[current].append(word)
    return classes


def vocabulary_size(name: str = "words_en.txt") -> int:
    """Number of distinct word forms the generator can produce (base and inflected)."""
    forms: set[str] = set()
    for items in load_vocabulary(name).values():
        for w in items:
            if isinstance(w, Noun):
                forms.update((w.sg, w.pl))
            elif isinstance(w, Verb):
                forms.update((w.base, w.past, w.ing, w.third))
            else:
                forms.add(w)
    return len(forms)


class SentenceGenerator:
    """Random English sentences from the shipped vocabulary.

    Args:
        seed: random seed; the same seed gives the same sentences.
        min_words, max_words: sentences outside this length are redrawn.
    """

    def __init__(self, seed: int = 0, min_words: int = 4, max_words: int = 22) -> None:
        self.rng = random.Random(seed)
        self.v = load_vocabulary()
        self.min_words, self.max_words = min_words, max_words

    # ----- small helpers -------------------------------------------------------------------
    def _pick(self, cls: str):
        return self.rng.choice(self.v[cls])

    def _chance(self, p: float) -> bool:
        return self.rng.random() < p

    def _det_np(self, noun: Noun, plural: bool, allow_adj: bool = True) -> str:
        r = self.rng
        words = []
        if plural:
            words.append(r.choice(["the", "some", "many", "a few", "those", "these", "my", "our", r.choice(_NUMBERS)]))
        else:
            words.append(r.choice(["the", "a", "the", "a", "this", "that", "my", "your", "his", "her", "our", "their"]))
        if allow_adj and self._chance(0.45):
            words.append(self._pick("adj") if self._chance(0.8) else self._pick("colour"))
            if self._chance(0.12):
                words.append(self._pick("adj"))
        words.append(noun.pl if plural else noun.sg)
        return " ".join(words)

    @staticmethod
    def _fix_article(s: str) -> str:
        out, toks = [], s.split(" ")
        for i, t in enumerate(toks):
            if t in ("a", "an") and i + 1 < len(toks):
                t = "an" if toks[i + 1][:1] in "aeiou" else "a"
            out.append(t)
        return " ".join(out)

    def noun_phrase(self, cls: str | None = None, subject: bool = False) -> tuple[str, bool]:
        """A noun phrase and whether it is plural (for verb agreement)."""
        r = self.rng
        if cls is None:
            cls = r.choice(
                ["person", "person", "animal", "name", "pronoun"]
                if subject
                else ["thing", "thing", "animal", "person", "food"]
            )
        if cls == "name":
            return self._pick("name"), False
        if cls == "pronoun":
            p = r.choice(
                ["i", "you", "he", "she", "we", "they", "it"]
                if subject
                else ["me", "you", "him", "her", "us", "them", "it"]
            )
            return p, p in ("you", "we", "they", "i")
        plural = self._chance(0.3)
        np_ = self._det_np(self._pick(cls), plural)
        if self._chance(0.1):
            np_ += " of " + self._det_np(self._pick("place"), False, allow_adj=False)
        elif self._chance(0.08) and not subject:
            v: Verb = self._pick("vt")
            np_ += " that " + self.noun_phrase("person", subject=True)[0] + " " + v.past
        return np_, plural

    def object_phrase(self, verb: Verb) -> str:
        if self._chance(0.12):
            return "some " + self._pick("mass").sg
        return self.noun_phrase()[0]

    def place_phrase(self) -> str:
        return self._pick("prep") + " " + self._det_np(self._pick("place"), False, allow_adj=self._chance(0.5))

    def time_phrase(self) -> str:
        r = self.rng
        return r.choice(
            [
                f"on {self._pick('weekday')}",
                f"last {self._pick('weekday')}",
                f"next {self._pick('weekday')}",
                f"in the {self._pick('time').sg}",
                f"every {self._pick('time').sg}",
                "after lunch",
                "at night",
                "before breakfast",
                "after dinner",
                f"{r.choice(_NUMBERS)} days ago",
                "this morning",
                f"at {r.choice(_HOURS)} o'clock",
            ]
        )

    def verb_phrase(self, subj: str, plural: bool, tense: str) -> str:
        """A predicate for ``subj`` in ``tense``: past, present, future, progressive, modal, perfect."""
        r = self.rng
        transitive = self._chance(0.7)
        verb: Verb = self._pick("vt" if transitive else "vi")
        neg = self._chance(0.12)
        third = not plural and subj not in ("i", "you")
        if tense == "past":
            head = ("did not " + verb.base) if neg else verb.past
        elif tense == "present":
            if neg:
                head = ("does not " if third else "do not ") + verb.base
            else:
                head = verb.third if third else verb.base
        elif tense == "future":
            head = ("will not " if neg else "will ") + verb.base
        elif tense == "progressive":
            be = "am" if subj == "i" else ("is" if third else "are")
            if self._chance(0.5):
                be = "was" if (third or subj == "i") else "were"
            head = be + (" not " if neg else " ") + verb.ing
        else:  # modal
            head = (
                r.choice(["can", "could", "should", "might", "must", "would"]) + (" not " if neg else " ") + verb.base
            )
        parts = [head]
        if transitive:
            parts.append(self.object_phrase(verb))
        if self._chance(0.35):
            parts.append(self.place_phrase())
        if self._chance(0.2):
            parts.insert(1 if not transitive else 2, self._pick("adv"))
        return " ".join(parts)

    def clause(self) -> str:
        subj, plural = self.noun_phrase(subject=True)
        tense = self.rng.choice(["past", "past", "present", "future", "progressive", "modal"])
        return f"{subj} {self.verb_phrase(subj, plural, tense)}"

    def question(self) -> str:
        r = self.rng
        subj, plural = self.noun_phrase(subject=True)
        third = not plural and subj not in ("i", "you")
        kind = r.choice(["yesno", "wh", "where", "why"])
        verb: Verb = self._pick("vt")
        if kind == "yesno":
            aux = r.choice(["did", "will", "can", "should", "does" if third else "do"])
            return f"{aux} {subj} {verb.base} {self.object_phrase(verb)}"
        if kind == "wh":
            return f"{r.choice(['what', 'which ' + self._pick('thing').sg])} did {subj} {verb.base}"
        if kind == "where":
            return f"where {'does' if third else 'do'} {subj} {verb.base} {self.object_phrase(verb)}"
        return f"why did {subj} {verb.base} {self.object_phrase(verb)} {self.time_phrase()}"

    def _raw(self) -> tuple[str, str]:
        r = self.rng
        kind = r.random()
        if kind < 0.14:
            return self.question(), "?"
        s = self.clause()
        if kind < 0.32:
            s = f"{s} {r.choice(['and', 'but', 'because', 'when', 'so', 'while', 'after'])} {self.clause()}"
        elif kind < 0.44:
            s = f"{self.time_phrase()}, {s}"
        elif kind < 0.5:
            s = f"{s} {self.time_phrase()}"
        elif kind < 0.55:
            s = f"{r.choice(['yesterday', 'suddenly', 'luckily', 'sadly', 'of course', 'then'])}, {s}"
        return s, "." if r.random() > 0.05 else "!"

    def sentence(self) -> Sentence:
        """One sentence within the length bounds."""
        while True:
            body, end = self._raw()
            body = self._fix_article(body).replace(" i ", " I ")
            if body.startswith("i "):
                body = "I" + body[1:]
            n = len(body.split())
            if self.min_words <= n <= self.max_words:
                spoken = body[:1].upper() + body[1:] + end
                return Sentence(spoken=spoken, text=normalise_text(spoken))

    def sentences(self, n: int) -> list[Sentence]:
        """``n`` sentences (duplicates allowed but rare)."""
        return [self.sentence() for _ in range(n)]


def read_sentences(path: str | os.PathLike) -> list[Sentence]:
    """The sentences of a UTF-8 text file, one per line (spoken as written, normalised text)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise ValueError(f"{path}: text file not found") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); re-save it as UTF-8") from err
    out = []
    for line in lines:
        spoken = " ".join(line.split())
        text = normalise_text(spoken)
        if text:
            out.append(Sentence(spoken, text))
    if not out:
        raise ValueError(f"{path}: no sentences in the text file (one sentence per line)")
    return out
