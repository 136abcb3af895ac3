"""Scoring worker: `python -m pipeline.scoring_worker <module:function>`.

Imports the grader, writes READY, then answers length-prefixed pickled argument tuples on stdin with
pickled results on stdout until stdin closes. Exceptions become `error` results; the parent enforces
the time limit by killing this process."""

from __future__ import annotations

import importlib
import logging
import sys


def main() -> None:
    logging.disable(logging.CRITICAL)  # grading libraries log per item; the parent reports statuses
    module, _, name = sys.argv[1].partition(":")
    fn = importlib.import_module(module)
    for part in name.split("."):
        fn = getattr(fn, part)
    from pipeline.scoring import read_message, write_message

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a grader that prints must not corrupt the protocol
    write_message(out, b"ready")
    fd = sys.stdin.fileno()
    while True:
        try:
            args = read_message(fd)
        except EOFError:
            return
        try:
            result = fn(*args)
        except Exception as e:  # the grader must never take the run down
            result = (0.0, "error", type(e).__name__)
        write_message(out, result)


if __name__ == "__main__":
    main()
