"""Guards the SFT baseline itself: trained long enough on the embedded task, SFT must beat the base policy on
the levels it trains on, so an under-trained or broken SFT cannot pass silently (docs/results.md, issue 16)."""

import pytest

from pipeline.config import load_config
from pipeline.run import train

pytestmark = pytest.mark.slow

TRAINED = ["1", "2"]


def test_sft_beats_the_base_policy_on_its_training_levels(tmp_path, micro_path):
    cfg = load_config("sft", [
        "model.name_or_path=embedded:micro", "data.toy_levels=[1,2]", "data.toy_problems_per_level=400",
        "sft.batch_size=32", "sft.lr=3e-3", "sft.warmup_steps=5", "train.total_steps=120", "train.save_every=120",
        "eval.suites=[toy]", "eval.samples_per_problem=1", "eval.max_new_tokens=32", "eval.at_start=true",
        "eval.max_problems=0", "update.micro_batch_size=32", "generate.max_response_tokens=32"])
    summary = train(cfg, tmp_path / "sft")
    base, final = summary["eval"]["toy"]["base"], summary["eval"]["toy"]["final"]
    for lv in TRAINED:
        b, f = base["accuracy_by_level"][lv], final["accuracy_by_level"][lv]
        print(f"level {lv}: base {b:.3f} -> SFT {f:.3f}")
    gains = [final["accuracy_by_level"][lv] - base["accuracy_by_level"][lv] for lv in TRAINED]
    # every trained level improves, and on average by a margin far above the evaluation noise
    assert all(g > 0 for g in gains), gains
    assert sum(gains) / len(gains) > 0.15, gains
    assert summary["compute"]["sft_steps"] == 120 and summary["compute"]["rollout_tokens"] == 0
