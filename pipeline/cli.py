"""`prefix-rft` console script: `prefix-rft train|stage|eval ...` (each is also `python -m ...`)."""

from __future__ import annotations

import sys

USAGE = """usage: prefix-rft <command> [args]

commands:
  train   python -m pipeline.train     train (or resume) a run from a recipe
  stage   python -m pipeline.stage     re-run one stage of a run on cached inputs
  eval    python -m evaluation.run     evaluate a checkpoint on evaluation suites
  plan    python -m pipeline.memplan   per-GPU memory of a recipe (--config R --gpus G --gpu-memory-gib M)
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from pipeline.train import main as run
    elif command == "stage":
        from pipeline.stage import main as run
    elif command == "eval":
        from evaluation.run import main as run
    elif command == "plan":
        from pipeline.memplan import main as run
    else:
        print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr, end="")
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
