"""Transcript normalisation, the same for every preparer and for the synthetic corpus.

Rules (in this order):

1. Vulgar fractions are spelled (``½`` -> ``ONE HALF``, ``1¾`` -> ``ONE AND THREE QUARTERS``);
   superscript powers too (``x²`` -> ``X SQUARED``, ``³`` -> ``CUBED``, ``10⁶`` -> ``TEN TO THE
   POWER OF SIX``). Then Unicode NFKC (so ``H₂O`` -> ``H2O``, ``①`` -> ``1``); digits of other
   scripts become ASCII digits; curly quotes become ``'``; accents are kept (``café`` stays
   ``CAFÉ``).
2. Numbers become English words: ``42`` -> ``FORTY TWO``, ``1,000`` -> ``ONE THOUSAND``,
   ``3.5`` -> ``THREE POINT FIVE``, ``1st`` -> ``FIRST``; a sign before a number is spoken
   (``-7`` -> ``MINUS SEVEN``; a hyphen between two numbers or after a letter is not a sign);
   currency before or after a number (``$5`` -> ``FIVE DOLLARS``, ``£1`` -> ``ONE POUND``,
   ``€2.50`` -> ``TWO EUROS FIFTY CENTS``, ``¥`` yen); decades and plurals (``1990s`` ->
   ``NINETEEN NINETIES``, ``'80s`` -> ``EIGHTIES``); letters and digits written together are
   split (``3D`` -> ``THREE D``, ``mp3`` -> ``MP THREE``); ``%`` -> ``PERCENT``,
   ``&`` -> ``AND``. No digit, and no other numeric character, is left after this step.
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
>>> normalise_text("The 1990s: $5, ½ a 3D mp3, -7 degrees, x² and 1,000 others")
'THE NINETEEN NINETIES FIVE DOLLARS ONE HALF A THREE D MP THREE MINUS SEVEN DEGREES X SQUARED AND ONE THOUSAND OTHERS'
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORD = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


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


def _plural(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith("x"):
        last += "es"
    else:
        last += "s"
    return (head + " " + last).strip()


def _year_words(n: int) -> str:
    """``1990`` -> ``nineteen ninety``, ``1905`` -> ``nineteen oh five``; other numbers as usual."""
    if 1100 <= n <= 1999 or 2010 <= n <= 2099:
        hi, lo = divmod(n, 100)
        if lo == 0:
            return number_to_words(hi) + " hundred"
        return number_to_words(hi) + (" oh " if lo < 10 else " ") + number_to_words(lo)
    return number_to_words(n)


def _int_words(digits: str) -> str:
    return number_to_words(int(digits)) if len(digits) <= 15 else " ".join(_ONES[int(d)] for d in digits)


def _fraction_words(value: Fraction) -> str:
    num, den = value.numerator, value.denominator
    if den == 1:
        return number_to_words(num)
    name = {2: "half", 4: "quarter"}.get(den) or _ordinal(number_to_words(den))
    if num != 1:
        name = "halves" if den == 2 else name + "s"
    return f"{number_to_words(num)} {name}"


_SUPERSCRIPTS = {
    "⁰": "0",
    "¹": "1",
    "²": "2",
    "³": "3",
    "⁴": "4",
    "⁵": "5",
    "⁶": "6",
    "⁷": "7",
    "⁸": "8",
    "⁹": "9",
    "⁻": "-",
}


def _spell_power(m: re.Match) -> str:
    sup = "".join(_SUPERSCRIPTS[c] for c in m.group(0))
    neg, digits = sup.startswith("-"), sup.lstrip("-")
    if not digits or "-" in digits:
        return " "
    if not neg and digits == "2":
        return " squared "
    if not neg and digits == "3":
        return " cubed "
    return " to the power of " + ("minus " if neg else "") + _int_words(digits) + " "


def _spell_vulgar(m: re.Match) -> str:
    before, c = m.group(1), m.group(2)
    words = _fraction_words(Fraction(unicodedata.numeric(c)).limit_denominator(1000))
    return f"{before} and {words} " if before else f" {words} "


def _other_numeric(c: str) -> str:
    """A numeric character NFKC left alone (e.g. ``ↀ``, Arabic-Indic ``٣``): ASCII digits or words."""
    if c.isascii() or unicodedata.category(c)[0] != "N":
        return c
    d = unicodedata.decimal(c, None)
    if d is not None:
        return str(d)
    v = unicodedata.numeric(c, None)
    if v is None:  # pragma: no cover - every N* character has a numeric value
        return " "
    f = Fraction(v).limit_denominator(1000)
    return f" {f.numerator} " if f.denominator == 1 else f" {_fraction_words(f)} "


_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "", ""),
}
_CUR = "[$£€¥]"
_AMOUNT = r"(\d+)(?:\.(\d+))?"


def _money(sym: str, whole: str, frac: str | None) -> str:
    one, many, sub1, subn = _CURRENCY[sym]
    if frac and not (len(frac) == 2 and sub1):  # $3.5 -> three point five dollars
        return " " + _int_words(whole) + " point " + " ".join(_ONES[int(d)] for d in frac) + f" {many} "
    words = _int_words(whole) + " " + (one if int(whole) == 1 else many)
    if frac and int(frac):  # $2.50 -> two dollars fifty cents
        words += " " + _int_words(frac) + " " + (sub1 if int(frac) == 1 else subn)
    return f" {words} "


def _spell_decade(m: re.Match) -> str:
    digits = m.group(2)
    if m.group(1) and len(digits) == 2:  # '80s
        return " " + _plural(number_to_words(int(digits))) + " "
    words = _year_words(int(digits)) if len(digits) == 4 else _int_words(digits)
    return " " + _plural(words) + " "


def _spell_number(m: re.Match) -> str:
    whole, frac = m.group(1), m.group(2)
    words = _int_words(whole)
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return f" {words} "


def normalise_text(text: str) -> str:
    """Normalise a transcript as described in the module docstring."""
    t = re.sub(r"(\d?)([\u00bc-\u00be\u2150-\u215e\u2189])", _spell_vulgar, text)
    t = re.sub("[" + "".join(_SUPERSCRIPTS) + "]+", _spell_power, t)
    t = unicodedata.normalize("NFKC", t)
    t = "".join(_other_numeric(c) for c in t)
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'").replace("\u2212", "-")
    t = t.replace("%", " percent ").replace("&", " and ")
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)  # 1,000 -> 1000
    t = re.sub(r"(?<![\w.,-])-(?=" + _CUR + r"?\d)", " minus ", t)  # -7, -$5 (not 1990-2000, A-1, -- 3)
    t = re.sub(_CUR + r"\s?" + _AMOUNT, lambda m: _money(m.group(0)[0], m.group(1), m.group(2)), t)
    t = re.sub(_AMOUNT + r"\s?(" + _CUR + ")", lambda m: _money(m.group(3), m.group(1), m.group(2)), t)
    t = re.sub(r"(?<![^\W\d_])('?)(\d+)'?s\b", _spell_decade, t)  # 1990s, '80s
    t = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: f" {_ordinal(_int_words(m.group(1)))} ", t, flags=re.IGNORECASE)
    t = re.sub(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ", t)  # 3D -> 3 D, mp3 -> mp 3
    t = re.sub(_AMOUNT, _spell_number, t)
    t = t.upper()
    t = re.sub(r"[-/_]", " ", t)
    t = re.sub(r"[^\w\s']", " ", t)  # keep letters, apostrophes (no digits are left)
    t = re.sub(r"(?<!\w)'|'(?!\w)", " ", t)  # apostrophes only inside words
    return " ".join(t.split())
