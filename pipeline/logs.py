"""Logging setup for the command-line entry points (never at import time)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any


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


class StepBar:
    """The progress bar over training steps, on the main process, and only when stderr is a terminal:
    there, log lines are written above the bar (tqdm's logging redirect), so per-step lines never tear
    it apart; into a file or a pipe there is no bar, and the per-step log lines are the progress."""

    def __init__(self, total: int, initial: int, enabled: bool = True, stream: Any = None):
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        stream = stream or sys.stderr
        self.live = bool(enabled and getattr(stream, "isatty", lambda: False)())
        self.bar = tqdm(total=total, initial=initial, desc="steps", disable=not self.live, file=stream,
                        dynamic_ncols=True)
        self._redirect = logging_redirect_tqdm(tqdm_class=tqdm) if self.live else None
        if self._redirect is not None:
            self._redirect.__enter__()

    def set_postfix_str(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
