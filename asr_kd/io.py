"""Safe file writing and small data helpers: the one place the project writes files.

Every file a stage, a cache or a model writes appears whole or not at all: it is written
to a temporary name beside its final path (one name per process, so concurrent writers
never share it) and renamed into place. :func:`digest` and :func:`dict_diff` are the
fingerprint helpers used to decide whether stored work still matches a config.

Example
-------
>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "sub" / "scores.json"
>>> write_json(path, {"wer": 0.25})
>>> read_json(path)
{'wer': 0.25}
>>> digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
True
>>> dict_diff({"f": {"n": 80}, "k": 1}, {"f": {"n": 40}, "k": 1})
["field 'f.n': stored has 80, expected 40"]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any], fsync: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it into place.

    The parent folder is created when missing. ``fsync`` flushes the file to disk before the
    rename (for files other processes poll, such as a cache's index).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(
    path: str | os.PathLike, data: Any, indent: int = 1, sort_keys: bool = False, fsync: bool = False
) -> None:
    """Write ``data`` as JSON to ``path`` atomically (values JSON cannot hold are written as text)."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=str)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON data of ``path``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def digest(obj: Any) -> str:
    """A short stable digest (12 hex digits) of JSON-like data; key order does not matter."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    >>> flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3})
    {'a.b': 1, 'a.c.d': 2, 'e': 3}
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def dict_diff(stored: Mapping[str, Any], expected: Mapping[str, Any], stored_label: str = "stored") -> list[str]:
    """Human-readable differences between two nested mappings, one line per field.

    Values are compared after a JSON round trip, so tuples equal lists.
    """
    s = flatten(json.loads(json.dumps(stored, default=str)))
    e = flatten(json.loads(json.dumps(expected, default=str)))
    diffs = []
    for key in sorted(set(s) | set(e)):
        if key not in s:
            diffs.append(f"field {key!r}: missing from the {stored_label}, expected {e[key]!r}")
        elif key not in e:
            diffs.append(f"field {key!r}: {stored_label} has {s[key]!r}, missing from the expected config")
        elif s[key] != e[key]:
            diffs.append(f"field {key!r}: {stored_label} has {s[key]!r}, expected {e[key]!r}")
    return diffs


def drop_defaults(settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without the keys whose value is the given default, recursively.

    The fingerprint of a stage (or of a saved model) passes through this with the defaults of
    the settings added after the stage first ran: a setting left at the value that means the
    old behaviour is not recorded, so adding it does not make finished work run again.

    >>> drop_defaults({"corpus": {"seed": 0, "extra_voices": False}}, {"corpus": {"extra_voices": False}})
    {'corpus': {'seed': 0}}
    >>> drop_defaults({"lr": 1.0, "optimizer": "sgd"}, {"optimizer": "adam"})
    {'lr': 1.0, 'optimizer': 'sgd'}
    """
    out = json.loads(json.dumps(dict(settings), default=str))
    for key, default in defaults.items():
        if key not in out:
            continue
        if out[key] == default:
            del out[key]
        elif isinstance(default, Mapping) and isinstance(out[key], Mapping):
            out[key] = drop_defaults(out[key], default)
    return out
