"""Trackers through accelerate: tensorboard (the default) writes the step statistics offline; asking for
an uninstalled tracker, or an unknown one, stops with one line."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError, UserError


def test_tensorboard_logs_step_statistics_offline(tmp_path):
    pytest.importorskip("tensorboard")
    from accelerate import Accelerator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pipeline import tracking

    acc = Accelerator(cpu=True)
    cfg = load_config("quickstart")
    assert cfg.train.trackers == ["tensorboard"]  # the default
    tracking.start(acc, cfg, tmp_path)
    for step, loss in ((1, 0.5), (2, 0.25)):
        tracking.log_step(acc, {"loss": loss, "engine": "transformers", "nan": float("nan")}, step)
    tracking.finish(acc)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
    assert "nan" not in events.Tags()["scalars"] and "engine" not in events.Tags()["scalars"]
    flat = tracking.flat_config(cfg)
    assert flat["update.lora.rank"] == 0 and flat["train.trackers"] == "['tensorboard']"


def test_missing_or_unknown_tracker_is_one_line(tmp_path, monkeypatch):
    from pipeline import tracking

    monkeypatch.setattr(tracking, "find_spec", lambda name: None)  # nothing installed
    with pytest.raises(UserError, match="train.trackers: wandb is not installed; pip install wandb"):
        tracking.make_trackers(["wandb"], tmp_path)
    assert tracking.make_trackers(["tensorboard"], tmp_path) == []  # the default degrades to a warning
    with pytest.raises(ConfigError, match=r"train.trackers: unknown tracker\(s\) \['mlflow'\]"):
        load_config("quickstart", ["train.trackers=[mlflow]"])
