"""The examples in the docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "tierfleet.artifacts.gguf_tiny",
    "tierfleet.artifacts.manifest",
    "tierfleet.artifacts.compress",
    "tierfleet.artifacts.http_store",
    "tierfleet.artifacts.llama_build",
    "tierfleet.facts.release",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
