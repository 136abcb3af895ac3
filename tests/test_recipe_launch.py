"""Every recipe's launch command (its header comment) uses a shipped accelerate config and no inline
flag that the config file decides (mixed precision, FSDP settings, machines), so the command that users
copy cannot disagree with accelerate_configs/*.yaml; real-model recipes launch with FSDP2 in bf16."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "pipeline" / "recipes").glob("*.yaml"))
DECIDED_BY_CONFIG = {"--mixed_precision", "--use_fsdp", "--num_machines", "--multi_gpu", "--cpu", "--use_cpu",
                     "--use_deepspeed", "--distributed_type"}


def launch_commands(path: Path) -> list[list[str]]:
    """The `accelerate launch ...` commands in a recipe's comments, continuation lines joined."""
    lines = [ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")]
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("accelerate launch"):
            cmd = lines[i]
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1] + " " + lines[i]
            out.append(shlex.split(cmd))
        i += 1
    return out


def test_every_launch_uses_a_shipped_config_and_no_conflicting_flag():
    seen = 0
    for path in RECIPES:
        for cmd in launch_commands(path):
            seen += 1
            assert "--config_file" in cmd, f"{path.name}: {' '.join(cmd)}"
            config = ROOT / cmd[cmd.index("--config_file") + 1]
            assert config.is_file(), f"{path.name}: {config} is not a shipped accelerate config"
            bad = [f for f in cmd if f.split("=")[0] in DECIDED_BY_CONFIG or f.startswith("--fsdp")]
            assert not bad, f"{path.name}: inline flags {bad} belong in {config.name}"
            assert cmd[cmd.index("--config") + 1] == path.stem, f"{path.name} launches another recipe"
    assert seen >= len(RECIPES) - 4  # nearly every recipe documents its launch


def test_real_model_recipes_launch_fsdp2_in_bf16():
    from pipeline.config import load_config

    for path in RECIPES:
        cfg = load_config(str(path), [])
        if cfg.model.name_or_path.startswith("embedded"):
            continue
        cmds = launch_commands(path)
        assert cmds, f"{path.name}: a real-model recipe must show its launch command"
        for cmd in cmds:
            acc = yaml.safe_load((ROOT / cmd[cmd.index("--config_file") + 1]).read_text())
            assert acc["distributed_type"] == "FSDP" and acc["fsdp_config"]["fsdp_version"] == 2, path.name
            assert acc["mixed_precision"] == "bf16", path.name
            assert acc["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] is True, path.name
