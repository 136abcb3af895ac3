"""Re-run one stage of a run on its cached inputs.

    python -m pipeline.stage <curate|prefixes|generate|reward|replay|update> --output-dir runs/qs --step N [--force]

Without --force a complete cached output is reused (and reported); with it the stage is recomputed
from its cached inputs and rewritten. The run's own config.yaml is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.logs import setup_logging
from pipeline.run import Run, make_accelerator
from stages import STAGES, step_stages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="prefix-rft stage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", help="|".join(STAGES))
    ap.add_argument("--output-dir", required=True, help="an existing run directory")
    ap.add_argument("--step", type=int, default=None, help="step number (1..total_steps; not for curate)")
    ap.add_argument("--force", action="store_true", help="recompute even when a complete output exists")
    args = ap.parse_args(argv)
    setup_logging()
    try:
        record, reused = run_stage(args.stage, Path(args.output_dir), args.step, args.force)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.stage}: {'reused cached output' if reused else 'computed'} at {record.path} "
          f"(fingerprint {record.fingerprint})")
    print(json.dumps(record.meta.get("stats", {}), sort_keys=True))
    return 0


def run_stage(stage: str, output_dir: Path, step: int | None, force: bool):
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    config_path = output_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{output_dir} is not a run directory ({config_path} is missing); start one with "
                        "python -m pipeline.train --config <recipe> --output-dir DIR")
    cfg = load_config(str(config_path))
    if not STAGES[stage].per_step:
        step = 0
    elif step is None or not 1 <= step <= cfg.train.total_steps:
        raise UserError(f"--step {step} does not exist: this run has steps 1..{cfg.train.total_steps}")
    elif stage not in step_stages(cfg, step):
        raise UserError(f"step {step} of this run has no {stage} stage (it runs "
                        f"{' -> '.join(step_stages(cfg, step))})")
    run = Run(cfg, output_dir, make_accelerator(cfg))
    before = run.complete(stage, step)
    return run.run_stage(stage, step, force=force), before and not force


if __name__ == "__main__":
    sys.exit(main())
