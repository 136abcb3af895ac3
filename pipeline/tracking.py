"""Experiment trackers through accelerate (`train.trackers`): tensorboard by default, written offline to
`<output-dir>/tensorboard/`; `wandb` and `trackio` when asked for. Main process only. Each step logs
the numbers of metrics.jsonl; the resolved config is stored as the run's hyper-parameters.

    tensorboard --logdir runs/qs/tensorboard
    python -m pipeline.train --config quickstart --output-dir runs/qs 'train.trackers=[tensorboard,wandb]'
"""

from __future__ import annotations

import logging
import math
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from pipeline.config import Config, to_dict
from pipeline.errors import UserError

log = logging.getLogger(__name__)

PROJECT = "prefix-rft"
# tracker name -> (module it needs, pip package)
REQUIREMENTS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
                "trackio": ("trackio", "trackio")}


def make_trackers(names: list[str], output_dir: Path) -> list[Any]:
    """accelerate tracker objects for `names`. A missing tensorboard (the default) is skipped with a
    warning; a tracker the user asked for that is not installed is an error."""
    from accelerate.tracking import TensorBoardTracker, TrackioTracker, WandBTracker

    trackers = []
    for name in names:
        module, package = REQUIREMENTS[name]
        if find_spec(module) is None:
            if name == "tensorboard":
                log.warning("train.trackers: tensorboard is not installed (pip install tensorboard); not logging to it")
                continue
            raise UserError(f"train.trackers: {name} is not installed; pip install {package}, or drop it from "
                            "train.trackers")
        if name == "tensorboard":
            trackers.append(TensorBoardTracker("tensorboard", str(output_dir)))
        elif name == "wandb":
            trackers.append(WandBTracker(PROJECT, name=output_dir.name, dir=str(output_dir)))
        else:
            trackers.append(TrackioTracker(PROJECT, name=output_dir.name))
    return trackers


def flat_config(cfg: Config) -> dict[str, Any]:
    """`section.field` -> value, lists and nested sections as strings (tracker hyper-parameter tables
    take scalars only)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                out[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) or value is None \
                    else str(value)

    walk("", to_dict(cfg))
    return out


def start(accelerator: Any, cfg: Config, output_dir: Path) -> None:
    """Start the configured trackers (main process) and store the config as hyper-parameters."""
    if not accelerator.is_main_process or not cfg.train.trackers:
        return
    trackers = make_trackers(cfg.train.trackers, Path(output_dir))
    if trackers:
        accelerator.log_with = list(accelerator.log_with) + trackers  # instances: init_trackers starts them
        accelerator.init_trackers(PROJECT, config=flat_config(cfg))


def log_step(accelerator: Any, stats: dict[str, Any], step: int) -> None:
    """The step's finite numeric statistics to every tracker (main process)."""
    if accelerator.is_main_process and accelerator.trackers:
        values = {k: float(v) for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v)}
        accelerator.log(values, step=step)


def finish(accelerator: Any) -> None:
    """Close the trackers (not `accelerator.end_training()`: that also tears down the process group,
    which the final evaluation still needs)."""
    if accelerator.is_main_process:
        for tracker in accelerator.trackers:
            tracker.finish()
        accelerator.trackers = []
