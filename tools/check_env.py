"""Check that the project's environment is the locked one and that its compiled parts load.

Run by tools/venv.sh with the venv's interpreter, and by .ci/run. Two checks:

``versions``
    every package of tools/requirements.lock that applies to this interpreter and platform
    (its environment marker) is installed at the locked version. With ``--strict`` a package
    installed by hand (in the venv but not in the lock) is an error too. Exit status 3 on a
    mismatch, with one line per package: what the lock says, what is installed.
``imports``
    torch, torchaudio (its compiled extension: ``forced_align`` on a tiny input), speechbrain,
    sentencepiece and flashlight-text are imported and used once. Exit status 4 on the first
    failure, naming the package, the installed torch/torchaudio versions and the fix.

Example
-------
    .venv/bin/python tools/check_env.py versions --strict
    .venv/bin/python tools/check_env.py imports
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "tools" / "requirements.lock"
#: Installed by the venv itself or by this project, never pinned in the lock.
UNLOCKED = {"pip", "asr-kd"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?\s*$")


def normalise(name: str) -> str:
    """PEP 503 name: ``Flashlight_Text`` -> ``flashlight-text``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_holds(marker: str | None) -> bool:
    if not marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # pip always carries a copy
        from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
    return Marker(marker).evaluate()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """Package -> locked version, for the entries whose marker holds here."""
    pins: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line or line[0] in "# " or line.startswith("--"):
            continue
        m = _PIN.match(line)
        if not m:
            raise SystemExit(
                f"{path}:{lineno}: not a 'name==version ; marker' line: {line!r}; "
                "regenerate the lock with bash tools/lock.sh"
            )
        name, version, marker = m.groups()
        if _marker_holds(marker):
            pins[normalise(name)] = version
    return pins


def installed() -> dict[str, str]:
    """Package -> installed version, in the running interpreter's environment."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[normalise(name)] = dist.version
    return out


def version_problems(lock: dict[str, str], have: dict[str, str], strict: bool) -> list[str]:
    """One line per difference between the lock and what is installed.

    >>> version_problems({"torch": "2.11.0", "numpy": "2.4.6"}, {"torch": "2.11.0", "numpy": "2.4.6"}, True)
    []
    >>> version_problems({"torchaudio": "2.11.0"}, {"torchaudio": "2.11.1", "onnx": "1.0"}, True)
    ['torchaudio: locked 2.11.0, installed 2.11.1', 'onnx: installed 1.0, not in the lock (installed by hand?)']
    >>> version_problems({"torch": "2.11.0"}, {}, False)
    ['torch: locked 2.11.0, not installed']
    """
    problems = []
    for name, want in sorted(lock.items()):
        got = have.get(name)
        if got is None:
            problems.append(f"{name}: locked {want}, not installed")
        elif got != want:
            problems.append(f"{name}: locked {want}, installed {got}")
    if strict:
        for name in sorted(set(have) - set(lock) - UNLOCKED):
            problems.append(f"{name}: installed {have[name]}, not in the lock (installed by hand?)")
    return problems


def _check(package: str, use) -> None:
    try:
        use()
    except Exception as err:  # noqa: BLE001 - any failure of a compiled part is reported alike
        have = installed()
        names = dict.fromkeys(["torch", "torchaudio", package])  # ordered, without repeats
        versions = ", ".join(f"{p} {have.get(p, 'not installed')}" for p in names)
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        print(
            f"check_env: {package} does not load in this environment ({versions}): {last}\n"
            f"  fix: rebuild the environment from the lock: rm -rf .venv && bash tools/test.sh "
            f"(the lock pins pairs known to load together; see README, 'Install')",
            file=sys.stderr,
        )
        raise SystemExit(4) from None


def check_imports() -> None:
    """Import and use each package with a compiled part; exit 4 naming the first that fails."""

    def use_torch():
        import torch

        torch.ones(2, 3).sum().item()

    def use_torchaudio():
        import torch
        import torchaudio.functional as F

        log_probs = torch.log_softmax(torch.randn(1, 5, 3), dim=-1)
        aligned, _ = F.forced_align(log_probs, torch.tensor([[1, 2]], dtype=torch.int32), blank=0)
        assert aligned.shape == (1, 5)

    def use_speechbrain():
        import speechbrain.utils.edit_distance as ed  # noqa: F401
        from speechbrain.core import Brain  # noqa: F401

    def use_sentencepiece():
        import sentencepiece

        sentencepiece.SentencePieceProcessor()

    def use_flashlight():
        from flashlight.lib.text.decoder import CriterionType  # noqa: F401
        from torchaudio.models.decoder import ctc_decoder  # noqa: F401

    for package, use in [
        ("torch", use_torch),
        ("torchaudio", use_torchaudio),
        ("speechbrain", use_speechbrain),
        ("sentencepiece", use_sentencepiece),
        ("flashlight-text", use_flashlight),
    ]:
        _check(package, use)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=["versions", "imports"])
    parser.add_argument(
        "--strict", action="store_true", help="versions: a package that is not in the lock is an error too (CI)"
    )
    parser.add_argument("--lock", type=Path, default=LOCK)
    args = parser.parse_args(argv)
    if args.check == "imports":
        check_imports()
        print("check_env: torch, torchaudio, speechbrain, sentencepiece, flashlight-text load")
        return 0
    problems = version_problems(read_lock(args.lock), installed(), args.strict)
    if problems:
        print(f"check_env: this environment ({sys.prefix}) differs from {args.lock.name}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
