"""scripts/compare_methods.py: every method shares the base recipe's budget; the aggregation arithmetic."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from pipeline.config import config_from_dict

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_methods.py"
spec = importlib.util.spec_from_file_location("compare_methods", SCRIPT)
cm = importlib.util.module_from_spec(spec)
sys.modules["compare_methods"] = cm  # dataclasses look their module up
spec.loader.exec_module(cm)


def test_mean_std_hand_computed():
    # mean (0.2 + 0.4 + 0.6) / 3 = 0.4; sample var ((-.2)^2 + 0 + .2^2) / 2 = 0.04 -> std 0.2
    m, s = cm.mean_std([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4) and s == pytest.approx(0.2)
    assert cm.mean_std([0.5]) == (0.5, 0.0)


def test_every_method_gets_the_same_rollout_budget():
    cfgs = {m.name: config_from_dict(cm.method_config(m, "quickstart", 1, ["train.total_steps=20"], False))
            for m in cm.METHODS}
    for name, c in cfgs.items():
        assert c.train.seed == 1 and c.eval.at_start is False, name
        assert c.generate.max_response_tokens == cfgs["prefix-rft"].generate.max_response_tokens, name
        assert c.prefixes.prompts_per_step == 32 and c.eval.validation_every == 4, name  # 20 // 5 points
        rl_steps = c.train.total_steps - (c.sft.steps if c.sft.mode == "then_rl" else 0)
        assert rl_steps == 20, name
        if c.sft.mode == "off":
            assert c.prefixes.samples_per_prompt == 8, name
    # sft-then-rft keeps the recipe's proportion 20 SFT : 50 RL -> round(20 * 20 / 50) = 8 SFT steps
    assert cfgs["sft-then-rft"].sft.steps == 8 and cfgs["sft-then-rft"].train.total_steps == 28
    assert cfgs["rft"].prefixes.hybrids_per_prompt == 0
    assert cfgs["gate-bottom"].objective.gate == "bottom" and cfgs["prefix-rft"].objective.gate == "top"
    assert cfgs["uniform"].prefixes.schedule == "uniform" and cfgs["prefix-rft"].prefixes.schedule == "cosine"
    assert cfgs["luffy"].objective.prefix_loss == "shaped" and cfgs["sft"].sft.mode == "only"


def test_aggregate_and_table():
    rs = [cm.RunResult("rft", s, acc, {"1": acc}, 0.5, 10.0, [(0, 0.1), (5, acc)]) for s, acc in ((0, 0.3), (1, 0.5))]
    agg = cm.aggregate(rs, {"accuracy": 0.1, "accuracy_by_level": {"1": 0.1}})
    v = agg["methods"]["rft"]
    assert v["accuracy"] == pytest.approx(0.4) and v["accuracy_std"] == pytest.approx(math.sqrt(0.02))
    md = cm.results_markdown(agg, "# t")
    assert "| RFT (Dr. GRPO) | 40.0 ± 14.1 | 40.0 | 0.500 | 10 |" in md and "| base policy | 10.0 | 10.0 |" in md


def test_unknown_method_is_a_one_line_error(tmp_path, capsys):
    assert cm.main(["--output-dir", str(tmp_path), "--methods", "prefix-rtf", "--dry-run"]) == 2
    assert "--methods: unknown prefix-rtf" in capsys.readouterr().err


def test_default_task_trains_every_method_on_levels_2_to_6():
    # the Prefix-RFT methods are the base recipe itself: laying quickstart's own settings over
    # compare_toy would silently put them back on levels 2-4 while the baselines train on 2-6
    for m in cm.METHODS:
        c = config_from_dict(cm.method_config(m, "compare_toy", 0, [], True))
        assert c.data.toy_levels == [2, 3, 4, 5, 6], m.name
    assert config_from_dict(cm.method_config(cm.BY_NAME["gate-random"], "compare_toy", 0, [], True)).objective.gate \
        == "random"


def test_a_base_without_demonstration_slots_cannot_stand_for_prefix_rft(tmp_path, capsys):
    assert cm.main(["--output-dir", str(tmp_path), "--recipe-base", "rft", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--recipe-base rft: prefix-rft is the base recipe itself" in err and "Traceback" not in err
    assert cm.main(["--output-dir", str(tmp_path), "--recipe-base", "rft", "--methods", "rft,sft", "--dry-run"]) == 0
