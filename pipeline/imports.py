"""Optional engines: availability checks and a one-line error naming the install command.

SGLang is imported only by `pipeline/backends/sglang.py` (and only when `generate.backend: sglang`
is chosen); the default install never brings it, and no other module imports it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from pipeline.errors import UserError

EXTRAS = {"sglang": "sglang"}  # importable module -> the extra of this project that installs it


def is_sglang_available() -> bool:
    """Whether `import sglang` would find a module (without importing it)."""
    return importlib.util.find_spec("sglang") is not None


def check_available(module: str = "sglang", feature: str = "generate.backend: sglang") -> None:
    """Stop with the command that installs an optional engine when it is missing (nothing is imported)."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS.get(module, module)
        raise UserError(f"{feature} needs {module}, which is not installed: pip install -e .[{extra}] "
                        f"(GPU machines; on a CPU-only machine see `make test-sglang` in the README)")


def require(module: str = "sglang", feature: str = "generate.backend: sglang") -> ModuleType:
    """Import an optional engine, or stop with the command that installs it."""
    check_available(module, feature)
    return importlib.import_module(module)
