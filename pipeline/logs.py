"""Logging setup for the command-line entry points (never at import time)."""

from __future__ import annotations

import logging
import os
import warnings


def setup_logging() -> None:
    """INFO on the main process, WARNING elsewhere; quiet the libraries' per-call chatter."""
    main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, format="%(message)s", force=True)
    for name in ("transformers", "datasets", "accelerate", "math_verify", "latex2sympy2_extended", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
