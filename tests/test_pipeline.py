"""End to end on the micro embedded model: the run-directory contract, byte-identical stage re-runs,
cache hits and invalidation, resume after an interruption."""

import json
import shutil
from pathlib import Path

import pytest

from pipeline import cache
from pipeline.config import load_config
from pipeline.run import Run, train
from pipeline.stage import run_stage

pytestmark = pytest.mark.slow

MICRO = ["model.name_or_path=embedded:micro", "data.toy.levels=[1,2]", "data.toy.problems_per_level=20",
         "prefixes.prompts_per_step=2", "prefixes.samples_per_prompt=4", "generate.max_response_tokens=24",
         "train.total_steps=2", "train.keep_last=2", "train.save_every=1", "eval.max_problems=6",
         "eval.samples_per_problem=1", "eval.max_new_tokens=24", "update.lr=1e-3", "update.micro_batch_size=4"]
STAGES = ("prefixes", "generate", "reward", "update")


def micro_cfg(*extra):
    return load_config("quickstart", MICRO + list(extra))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, micro_path):
    out = tmp_path_factory.mktemp("run") / "qs"
    summary = train(micro_cfg(), out)
    return out, summary


def _arrow_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "data").glob("*")) if p.is_file()}


def _written_at(folder: Path) -> float:
    return json.loads((folder / cache.MARKER).read_text())["written_at"]


def test_run_directory_contract(finished_run):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, summary = finished_run
    assert (out / "config.yaml").is_file()
    assert len(load_from_disk(str(out / "curate" / "data"))) > 0  # the path the README documents
    assert len(load_from_disk(str(out / "eval" / "base" / "toy" / "data"))) == 6
    for step in (1, 2):
        for stage in STAGES:
            folder = out / "steps" / f"{step:06d}" / stage
            assert cache.folder_status(folder) == "complete", folder
            assert len(load_from_disk(str(folder / "data"))) > 0, folder
            meta = json.loads((folder / "meta.json").read_text())
            assert meta["fingerprint"] and "seconds" in meta["stats"] and meta["stats"]["rows"] > 0
    gen_meta = json.loads((out / "steps/000001/generate/meta.json").read_text())
    assert gen_meta["stats"]["engine"].startswith("transformers-") and gen_meta["stats"]["tokens_per_s"] > 0
    ckpt = out / "checkpoints" / "step-000002"
    assert AutoModelForCausalLM.from_pretrained(ckpt) is not None and AutoTokenizer.from_pretrained(ckpt) is not None
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    row = json.loads(lines[1])
    for key in ("reward_mean", "prefix_ratio_mean", "kept_prefix_entropy", "clip_frac", "response_length", "loss",
                "grad_norm", "seconds_stage_generate", "seconds"):
        assert key in row, key
    assert summary["eval"]["toy"]["base"]["problems"] == 6 and summary["eval"]["toy"]["final"] is not None
    # compute charged: both steps' update FLOPs and generated tokens, summed from the metric rows
    rows = [json.loads(x) for x in lines]
    c = summary["compute"]
    assert all(r["rollout_tokens"] > 0 and r["rollout_flops"] > 0 for r in rows)
    assert c["rollout_tokens"] == sum(r["rollout_tokens"] for r in rows) == sum(
        json.loads((out / f"steps/{s:06d}/generate/meta.json").read_text())["stats"]["completion_tokens"] for s in (1, 2))
    assert c["update_flops"] == pytest.approx(sum(r["model_flops"] for r in rows)) and c["rl_steps"] == 2
    assert c["total_flops"] == pytest.approx(c["update_flops"] + c["rollout_flops"])
    assert (out / "eval" / "base" / "toy" / cache.MARKER).is_file()


def test_run_lists_its_plots_and_tensorboard_command(finished_run):
    from pipeline.run import format_summary

    out, summary = finished_run
    names = ["reward.png", "prefix_ratio.png", "entropy.png", "accuracy_by_level.png"]
    assert summary["plots"][:4] == [str(out / "plots" / n) for n in names]
    assert summary["plots"][4] == str(out / "eval" / "accuracy_over_steps.png")
    for path in summary["plots"]:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["tensorboard"] == f"tensorboard --logdir {out / 'tensorboard'}"
    text = format_summary(summary)
    assert text.endswith(f"curves in tensorboard:  tensorboard --logdir {out / 'tensorboard'}")
    assert all(f"  {p}" in text for p in summary["plots"])


@pytest.mark.parametrize("stage", ("curate",) + STAGES)
def test_stage_rerun_reproduces_identical_bytes(finished_run, stage):
    out, _ = finished_run
    folder = out / "curate" if stage == "curate" else out / "steps" / "000002" / stage
    before = _arrow_bytes(folder)
    ckpt = out / "checkpoints" / "step-000002" / "model.safetensors"
    weights = ckpt.read_bytes()
    record, reused = run_stage(stage, out, 2, force=True)
    assert not reused
    assert _arrow_bytes(folder) == before
    assert ckpt.read_bytes() == weights  # update rewrites the checkpoint: same bytes


def test_cached_stages_are_reused(finished_run):
    out, _ = finished_run
    stamps = {s: _written_at(out / "steps" / "000002" / s) for s in STAGES}
    record, reused = run_stage("generate", out, 2, force=False)
    assert reused and _written_at(record.path) == stamps["generate"]
    train(micro_cfg(), out)  # the whole command again: nothing is recomputed
    assert {s: _written_at(out / "steps" / "000002" / s) for s in STAGES} == stamps


def test_changing_a_field_invalidates_exactly_what_follows(finished_run):
    from accelerate import Accelerator

    out, _ = finished_run
    acc = Accelerator(cpu=True)
    a = Run(micro_cfg(), out, acc)
    b = Run(micro_cfg("generate.temperature=0.7"), out, acc)
    assert a.fp("curate") == b.fp("curate") and a.fp("prefixes", 1) == b.fp("prefixes", 1)
    for stage in ("generate", "reward", "update"):
        assert a.fp(stage, 1) != b.fp(stage, 1)
    assert a.fp("prefixes", 2) == b.fp("prefixes", 2) and a.fp("generate", 2) != b.fp("generate", 2)
    c = Run(micro_cfg("objective.keep_ratio=0.5"), out, acc)
    assert c.fp("reward", 1) == a.fp("reward", 1) and c.fp("update", 1) != a.fp("update", 1)
    assert c.fp("generate", 2) != a.fp("generate", 2)  # generated by a different policy


def test_resume_after_interruption_matches_uninterrupted(finished_run, tmp_path, monkeypatch):
    out_ref, _ = finished_run
    out = tmp_path / "interrupted"
    calls = {"n": 0}
    original = Run.run_stage

    def crash_on_step_two(self, stage, step=0, force=False, strict=False):
        if stage == "reward" and step == 2:
            raise KeyboardInterrupt("simulated kill")
        calls["n"] += stage == "reward"
        return original(self, stage, step, force, strict)

    monkeypatch.setattr(Run, "run_stage", crash_on_step_two)
    with pytest.raises(KeyboardInterrupt):
        train(micro_cfg(), out)
    monkeypatch.setattr(Run, "run_stage", original)
    done = {s: _written_at(out / "steps" / "000001" / s) for s in STAGES}
    generated_2 = _written_at(out / "steps" / "000002" / "generate")
    before = json.loads((out / "elapsed.json").read_text())["seconds"]  # the killed command, through step 1
    assert before > 0
    summary = train(micro_cfg(), out)
    # the run's wall time adds the killed command's to the resuming one's
    assert summary["wall_seconds_total"] == pytest.approx(before + summary["wall_seconds"], abs=0.11)
    assert json.loads((out / "elapsed.json").read_text())["seconds"] == summary["wall_seconds_total"]
    assert {s: _written_at(out / "steps" / "000001" / s) for s in STAGES} == done  # not redone
    assert _written_at(out / "steps" / "000002" / "generate") == generated_2  # the step in flight reused
    a = (out / "checkpoints" / "step-000002" / "model.safetensors").read_bytes()
    b = (out_ref / "checkpoints" / "step-000002" / "model.safetensors").read_bytes()
    assert a == b
    assert (out / "metrics.jsonl").read_text() .count("\n") == 2


def test_half_written_stage_is_recomputed(finished_run, tmp_path, caplog):
    out = tmp_path / "copy"
    shutil.copytree(finished_run[0], out)
    marker = out / "steps" / "000002" / "reward" / cache.MARKER
    marker.unlink()
    run_stage("reward", out, 2, force=False)
    assert "incomplete or corrupted" in caplog.text and marker.is_file()


def test_other_config_in_the_output_dir_is_refused(finished_run):
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="holds a run with another config .*objective.keep_ratio"):
        train(micro_cfg("objective.keep_ratio=0.3"), finished_run[0])


def test_early_stopping_ends_the_run_at_the_plateau_and_stays_stopped(micro_path, tmp_path):
    # one generated token can never hold a boxed answer: every validation point scores 0, a tie with the first,
    # so with patience 2 the third validation point (step 3) is the second in a row without a new best
    extra = ("sft.mode=only", "sft.lr=1e-3", "train.total_steps=6", "eval.validation.every=1",
             "eval.validation.patience=2", "eval.validation.problems=2", "eval.max_new_tokens=1")
    out = tmp_path / "early"
    summary = train(micro_cfg(*extra), out)
    assert (summary["steps"], summary["steps_cap"], summary["stopped_early"]) == (3, 6, True)
    assert summary["final_checkpoint"].endswith("step-000003") and Path(summary["final_checkpoint"]).is_dir()
    assert summary["eval"]["toy"]["final"] is not None  # the final evaluation is of the step it stopped at
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["val_toy_accuracy"] == 0.0 for r in rows)
    assert not (out / "steps" / "000004").exists()
    again = train(micro_cfg(*extra), out)  # the same command again: nothing more to train
    assert again["steps"] == 3 and again["stopped_early"] and not (out / "steps" / "000004").exists()


def test_early_stopping_needs_validation_points():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="eval.validation.patience: early stopping needs validation points"):
        micro_cfg("eval.validation.patience=2")


def test_a_run_stored_before_a_field_existed_resumes(finished_run, tmp_path):
    import yaml

    out = tmp_path / "old"
    shutil.copytree(finished_run[0], out)
    stored = yaml.safe_load((out / "config.yaml").read_text())
    del stored["eval"]["validation"]["patience"]  # as written by a version without early stopping
    (out / "config.yaml").write_text(yaml.safe_dump(stored))
    assert train(micro_cfg(), out)["steps"] == 2  # accepted: the missing field is at its default
