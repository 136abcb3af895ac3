"""The step progress bar: on a terminal, log lines print above it; into a file or a pipe there is no bar,
only the per-step log lines, each whole."""

import io
import logging
import sys

from pipeline.logs import StepBar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(stream, monkeypatch):
    monkeypatch.setattr(sys, "stderr", stream)  # where the CLI's log lines and the bar go
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", logging.INFO)
    bar = StepBar(3, 0)
    for step in (1, 2, 3):
        bar.set_postfix_str("generate")
        logging.getLogger("pipeline.run").info("step %d/3  reward 0.500", step)
        bar.update(1)
    bar.close()
    return bar, stream.getvalue()


def test_no_bar_into_a_file_or_pipe(monkeypatch):
    bar, text = _run(io.StringIO(), monkeypatch)
    assert not bar.live
    assert text == "".join(f"step {s}/3  reward 0.500\n" for s in (1, 2, 3))  # plain lines, nothing else


def test_log_lines_above_the_bar_on_a_terminal(monkeypatch):
    bar, text = _run(_Terminal(), monkeypatch)
    assert bar.live and "steps:" in text and "3/3" in text
    for s in (1, 2, 3):
        # each log line starts a fresh line (the bar was cleared first) and ends one
        line = f"step {s}/3  reward 0.500\n"
        at = text.index(line)
        assert at == 0 or text[at - 1] in "\r\n"
