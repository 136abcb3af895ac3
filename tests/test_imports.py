"""Every module imports without optional engines (sglang) and without side effects."""

import importlib
import pkgutil

import pytest

import evaluation
import pipeline
import stages

MODULES = sorted({m.name for pkg in (pipeline, stages, evaluation)
                  for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")})


@pytest.mark.parametrize("name", MODULES)
def test_import(name):
    importlib.import_module(name)


def test_stage_modules_declare_their_contract():
    for name in ("curate", "prefixes", "generate", "reward", "update"):
        mod = importlib.import_module(f"stages.{name}")
        assert isinstance(mod.STAGE_VERSION, int) and mod.REQUIRES and callable(mod.run)
