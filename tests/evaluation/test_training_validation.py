"""Evaluation during training: every `eval.validation.every` steps on a validation slice, logged with the
step metrics, plotted over steps with the base and final evaluations."""

import json

import pytest

from pipeline.config import load_config
from pipeline.run import train

pytestmark = pytest.mark.slow

MICRO = ["model.name_or_path=embedded:micro", "data.toy.levels=[1,2]", "data.toy.problems_per_level=20",
         "prefixes.prompts_per_step=2", "prefixes.samples_per_prompt=4", "generate.max_response_tokens=24",
         "train.total_steps=2", "train.save_every=1", "eval.max_problems=6", "eval.samples_per_problem=1",
         "eval.max_new_tokens=24", "update.micro_batch_size=4", "eval.validation.every=1",
         "eval.validation.problems=3"]


def test_validation_at_each_step_is_logged(tmp_path, micro_path):
    out = tmp_path / "run"
    train(load_config("quickstart", MICRO), out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        val = json.loads((out / "eval" / "validation" / f"step-{r['step']:06d}" / "summary.json").read_text())
        assert val["suites"]["toy"]["problems"] == 3  # the slice, not the 6 problems of the full evaluation
        assert r["val_toy_accuracy"] == val["suites"]["toy"]["accuracy"]
    assert json.loads((out / "eval" / "step-000002" / "summary.json").read_text())["suites"]["toy"]["problems"] == 6
    assert (out / "eval" / "accuracy_over_steps.png").stat().st_size > 1000


def test_validation_lost_to_a_crash_is_redone_on_resume(tmp_path, micro_path):
    """A crash between step 1's update and its validation: the resumed run validates step 1 before step 2."""
    import shutil

    out = tmp_path / "run"
    cfg = load_config("quickstart", MICRO)
    train(cfg, out)
    # rewind to "killed right after step 1's update": nothing of step 2, no validation of step 1
    for path in ("steps/000002", "checkpoints/step-000002", "checkpoints/training-state-000002", "eval/step-000002",
                 "eval/validation/step-000002", "eval/validation/step-000001"):
        shutil.rmtree(out / path)
    (out / "summary.json").unlink()
    train(cfg, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("val_toy_accuracy" in r for r in rows)


def test_validation_on_its_own_suites_replaces_the_slice_of_the_held_out_suites(tmp_path, micro_path):
    """`eval.validation.suites`: validation runs on a split disjoint from the held-out one (toy_val), the final
    evaluation on `eval.suites`."""
    out = tmp_path / "run"
    train(load_config("quickstart", MICRO + ["train.total_steps=1", "eval.validation.suites=[toy_val]"]), out)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    val = json.loads((out / "eval" / "validation" / "step-000001" / "summary.json").read_text())["suites"]
    assert set(val) == {"toy_val"} and val["toy_val"]["problems"] == 3
    assert row["val_toy_val_accuracy"] == val["toy_val"]["accuracy"] and "val_toy_accuracy" not in row
    assert set(json.loads((out / "eval" / "step-000001" / "summary.json").read_text())["suites"]) == {"toy"}
