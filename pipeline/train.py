"""Train with Prefix-RFT (or any shipped method recipe), resuming from the last complete stage.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m pipeline.train \
        --config quickstart --output-dir runs/qs [section.field=value ...]
    python -m pipeline.train --config quickstart --output-dir runs/qs
    python -m pipeline.train --config quickstart --dry-run          # print the resolved config
"""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import UserError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="prefix-rft train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="recipe YAML path, or a shipped recipe name (e.g. quickstart)")
    ap.add_argument("--output-dir", help="run directory (created, or resumed when it holds this config)")
    ap.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    ap.add_argument("overrides", nargs="*", help="section.field=value")
    args = ap.parse_args(argv)

    from pipeline.config import dump_yaml, load_config
    from pipeline.logs import setup_logging

    try:
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            print(dump_yaml(cfg), end="")
            return 0
        if not args.output_dir:
            raise UserError("--output-dir is required (the run directory)")
        setup_logging()
        from pipeline.run import train

        train(cfg, args.output_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
