"""Command-line behaviour: one-line errors with a non-zero exit, dry runs, the console script."""

import subprocess
import sys

import pytest


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["pipeline.train", "--config", "no/such/recipe.yaml", "--output-dir", "x"], "config file no/such/recipe.yaml does not exist"),
    (["pipeline.train", "--config", "quickstart", "--output-dir", "x", "objective.keep_rati=0.3"], "did you mean 'keep_ratio'"),
    (["pipeline.train", "--config", "quickstart", "--output-dir", "x", "objective.keep_ratio=1.5"], "objective.keep_ratio=1.5 is out of range"),
    (["pipeline.train", "--config", "quickstart", "--output-dir", "x", "prefixes.hybrids_per_prompt=9"], "prefixes.hybrids_per_prompt=9"),
    (["pipeline.stage", "shuffle", "--output-dir", "x", "--step", "1"], "unknown stage 'shuffle'"),
    (["pipeline.stage", "reward", "--output-dir", "/nonexistent/run", "--step", "1"], "is not a run directory"),
])
def test_bad_input_gives_one_line_error(args, message):
    res = _run(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr


def test_dry_run_prints_resolved_config():
    res = _run("pipeline.train", "--config", "quickstart", "--dry-run", "train.total_steps=3")
    assert res.returncode == 0 and "total_steps: 3" in res.stdout


def test_console_script_dispatches():
    from pipeline.cli import main

    assert main([]) == 2
    assert main(["bogus"]) == 2
    assert main(["train", "--config", "quickstart", "--dry-run"]) == 0


def test_stage_step_out_of_range(tmp_path):
    from pipeline.config import dump_yaml, load_config

    (tmp_path / "config.yaml").write_text(dump_yaml(load_config("quickstart", ["train.total_steps=3"])))
    res = _run("pipeline.stage", "generate", "--output-dir", str(tmp_path), "--step", "7")
    assert res.returncode == 2 and "--step 7 does not exist: this run has steps 1..3" in res.stderr


@pytest.mark.slow
def test_accelerate_launch_runs_the_pipeline(tmp_path, micro_path):
    import os

    out = tmp_path / "run"
    cmd = ["accelerate", "launch", "--config_file", "accelerate_configs/cpu.yaml", "-m", "pipeline.train",
           "--config", "quickstart", "--output-dir", str(out), "model.name_or_path=embedded:micro",
           "train.total_steps=1", "prefixes.prompts_per_step=2", "eval.max_problems=4", "eval.max_new_tokens=16",
           "generate.max_response_tokens=16"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root, env=os.environ.copy())
    assert res.returncode == 0, res.stderr[-2000:]
    assert "final checkpoint" in res.stdout and (out / "checkpoints" / "step-000001" / "model.safetensors").is_file()
