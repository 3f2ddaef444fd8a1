"""Transcript normalisation, the same for every preparer and for the synthetic corpus.

Rules (in this order):

1. Unicode NFKC; curly quotes become ``'``; accents are kept (``café`` stays ``CAFÉ``).
2. Digits become English words: ``42`` -> ``FORTY TWO``, ``3.5`` -> ``THREE POINT FIVE``,
   ``1st`` -> ``FIRST``; ``%`` -> ``PERCENT``, ``&`` -> ``AND``.
3. Upper case.
4. Punctuation is removed, except an apostrophe inside a word (``DON'T``); hyphens and
   slashes become spaces.
5. White space is collapsed to single spaces.

Example
-------
>>> normalise_text("Hello, world! It's 42 degrees -- 3rd day.")
"HELLO WORLD IT'S FORTY TWO DEGREES THIRD DAY"
>>> normalise_text("well-known   café")
'WELL KNOWN CAFÉ'
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words (short scale).

    >>> number_to_words(1905)
    'one thousand nine hundred five'
    """
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_to_words(n % 100))
    for size, name in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            return number_to_words(n // size) + f" {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError(n)  # pragma: no cover


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORD:
        last = _ORD[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return (head + " " + last).strip()


def _spell_number(m: re.Match) -> str:
    whole, frac, suffix = m.group(1), m.group(2), m.group(3)
    words = number_to_words(int(whole)) if len(whole) <= 15 else " ".join(_ONES[int(d)] for d in whole)
    if suffix:
        words = _ordinal(words)
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return f" {words} "


def normalise_text(text: str) -> str:
    """Normalise a transcript as described in the module docstring."""
    t = unicodedata.normalize("NFKC", text)
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    t = t.replace("%", " percent ").replace("&", " and ")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 -> 1000
    t = re.sub(r"(\d+)(?:\.(\d+))?(st|nd|rd|th)?\b", _spell_number, t, flags=re.IGNORECASE)
    t = t.upper()
    t = re.sub(r"[-/_]", " ", t)
    t = re.sub(r"[^\w\s']", " ", t)  # keep letters, digits (none left), apostrophes
    t = re.sub(r"(?<!\w)'|'(?!\w)", " ", t)  # apostrophes only inside words
    return " ".join(t.split())
