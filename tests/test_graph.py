"""The stage table (stages.STAGES): fingerprints are derived from it, so a field added to one stage's
config slice invalidates exactly that stage and what follows it, and nothing else."""

import dataclasses

import pytest

import stages
from pipeline.config import load_config
from pipeline.run import Run
from stages import STAGES, step_stages
from tests.test_pipeline import MICRO

STEPS = 2
# what a change to each stage's own slice must invalidate in a two-step Prefix-RFT run, written out by
# hand from the graph: data flows prefixes -> generate -> reward -> update within a step, curate feeds
# every prefixes stage, and the update of step 1 is the policy generate and update of step 2 read
DOWNSTREAM = {
    "curate": {("curate", 0)} | {(s, t) for t in (1, 2) for s in ("prefixes", "generate", "reward", "update")},
    "prefixes": {(s, t) for t in (1, 2) for s in ("prefixes", "generate", "reward", "update")},
    "generate": {(s, t) for t in (1, 2) for s in ("generate", "reward", "update")},
    "reward": {("reward", 1), ("update", 1), ("generate", 2), ("reward", 2), ("update", 2)},
    "update": {("update", 1), ("generate", 2), ("reward", 2), ("update", 2)},
}


def _all_fps(cfg, out, acc):
    run = Run(cfg, out, acc)
    keys = [("curate", 0)] + [(s, t) for t in range(1, STEPS + 1) for s in step_stages(cfg, t)]
    return {k: run.fp(*k) for k in keys}


@pytest.mark.parametrize("stage", list(DOWNSTREAM))
def test_a_field_added_to_one_slice_invalidates_that_stage_and_what_follows(stage, tmp_path, micro_path,
                                                                           monkeypatch):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    cfg = load_config("quickstart", MICRO + [f"train.total_steps={STEPS}"])
    before = _all_fps(cfg, tmp_path, acc)
    spec = STAGES[stage]
    monkeypatch.setitem(stages.STAGES, stage, dataclasses.replace(
        spec, config=lambda c, step, old=spec.config: (*old(c, step), {"a_new_field": 1})))
    after = _all_fps(cfg, tmp_path, acc)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == DOWNSTREAM[stage]


def test_the_stage_list_is_the_table():
    from pipeline import stage as stage_cli

    assert list(STAGES) == ["curate", "prefixes", "generate", "reward", "replay", "update"]
    assert stage_cli.STAGES is STAGES
    relift = load_config("relift")
    assert step_stages(relift, 1) == ("prefixes", "generate", "reward", "replay", "update")
    # every input a stage declares is a stage of the table that runs before it in the same step (or curate)
    for cfg in (load_config("quickstart"), relift, load_config("sft")):
        order = step_stages(cfg, 1)
        for name in order:
            for dep in STAGES[name].inputs(cfg, 1):
                assert dep == "curate" or order.index(dep) < order.index(name), (name, dep)


def test_curate_cli_writes_what_a_training_run_reuses(tmp_path, micro_path):
    # `python -m stages.curate` fingerprints curation exactly as the orchestrator does: a run started on
    # the same directory finds the curate output complete and does not recompute it
    from accelerate import Accelerator

    from pipeline import cache
    from stages import curate

    assert curate.main(["--config", "quickstart", "--output-dir", str(tmp_path), *MICRO]) == 0
    written = cache.read_stage(tmp_path / "curate")
    run = Run(load_config("quickstart", MICRO), tmp_path, Accelerator(cpu=True))
    assert written.fingerprint == run.fp("curate") and run.complete("curate")
    assert run.run_stage("curate").meta == written.meta  # reused, not rewritten
