"""Test-only import shim: a stand-in `torchvision` for the SGLang conformance venv (never the package).

sglang 0.5.23 imports `torchvision.transforms` unconditionally on the engine's import path
(sglang/srt/multimodal/internvl_utils.py), and PyPI's torchvision is CUDA-linked, so the CPU venv gets
this meta-path finder instead. Any `torchvision[.x.y]` import yields an empty
package whose attributes are placeholders that raise when used; text-only generation never uses them.
It is installed by a .pth file, so the engine's spawned scheduler processes get it too. There is no
distribution metadata, so transformers still reports torchvision as unavailable.
"""

import importlib.abc
import importlib.machinery
import sys
import types


class _Placeholder:
    def __init__(self, name):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{self._name} is a test stub (tests/sglang/shims): torchvision is not installed")

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self._name}.{attr}")

    def __mro_entries__(self, bases):  # allow `class X(torchvision.Something):`
        return (object,)


class _StubModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self.__name__}.{attr}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+stub"
        return module

    def exec_module(self, module):
        pass


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
