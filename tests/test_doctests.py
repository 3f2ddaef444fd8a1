"""Every docstring example of every module of the asr_kd package runs and prints what it says.

The modules are found by walking the package, so a new module's examples run without being
listed here. To leave a module out, add it to ``SKIP`` with the reason; it shows as skipped
(``-ra``). Examples that need a file, a network or an optional program are marked
``# doctest: +SKIP`` in the module or written as a plain shell line without ``>>>``.
"""

import doctest
import importlib
import pkgutil

import pytest

import asr_kd

SKIP = {
    "asr_kd.__main__": "runs the CLI when imported (it is ``python -m asr_kd``); it has no examples",
}


def _raise(name):
    raise ImportError(f"cannot import {name} while walking asr_kd")


MODULES = sorted(m.name for m in pkgutil.walk_packages(asr_kd.__path__, "asr_kd.", onerror=_raise))


def test_the_walk_finds_every_module_and_skip_names_only_real_ones():
    assert {"asr_kd.models.mlp", "asr_kd.data.text", "asr_kd.image.train", "asr_kd.distill.losses"} <= set(MODULES)
    assert set(SKIP) <= set(MODULES), set(SKIP) - set(MODULES)


@pytest.mark.parametrize(
    "module",
    [pytest.param(m, marks=pytest.mark.skip(reason=SKIP[m])) if m in SKIP else m for m in MODULES],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module} failed (see stdout)"
