"""Every docstring example runs and prints what it says."""

import doctest
import importlib

import pytest

MODULES = [
    "asr_kd.distill.losses",
    "asr_kd.distill.targets",
    "asr_kd.distill.objective",
    "asr_kd.distill.ensemble",
    "asr_kd.distill.cache",
    "asr_kd.distill.hints",
    "asr_kd.distill.specialists",
    "asr_kd.models.acoustic",
    "asr_kd.asr.decode",
    "asr_kd.asr.lm",
    "asr_kd.asr.score",
    "asr_kd.asr.guidance",
    "asr_kd.asr.ensemble",
    "asr_kd.asr.checkpoint",
    "asr_kd.asr.data",
    "asr_kd.asr.train",
    "asr_kd.asr.recipe",
    "asr_kd.asr.report",
    "asr_kd.stages",
    "asr_kd.config",
    "asr_kd.image.recipe",
    "asr_kd.image.report",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
