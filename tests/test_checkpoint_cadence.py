"""train.state_every: which checkpoints an update writes, what pruning keeps, and that a run killed between two
training states resumes from the last one and ends with the weights of a run that wrote a state every step."""

import json
from types import SimpleNamespace

import pytest

from pipeline.checkpoint import prune_checkpoints, writes_after
from pipeline.config import EvalConfig, ValidationConfig
from pipeline.run import Run, train
from tests.test_pipeline import STAGES, micro_cfg


def _cfg(state_every=1, save_every=50, total=10, validate=0, backend="transformers"):
    return SimpleNamespace(train=SimpleNamespace(state_every=state_every, save_every=save_every, total_steps=total),
                           eval=EvalConfig(suites=["toy"], validation=ValidationConfig(every=validate)),
                           generate=SimpleNamespace(backend=backend))


def test_what_each_step_writes():
    every = [writes_after(_cfg(), s) for s in range(1, 11)]
    assert every == [(True, True)] * 10  # the default: weights and state after every step
    # state every 4th step and the last (10); weights also at save_every (5) and validation (3) steps
    got = {s: writes_after(_cfg(state_every=4, save_every=5, validate=3), s) for s in range(1, 11)}
    assert {s for s, (_, st) in got.items() if st} == {4, 8, 10}
    assert {s for s, (w, _) in got.items() if w} == {3, 4, 5, 6, 8, 9, 10}
    # an SGLang engine may load each step's weights from disk: weights every step, states still thinned
    got = [writes_after(_cfg(state_every=4, backend="sglang"), s) for s in range(1, 11)]
    assert all(w for w, _ in got) and [s for s, (_, st) in enumerate(got, 1) if st] == [4, 8, 10]


def test_pruning_keeps_the_last_states_that_exist(tmp_path):
    root = tmp_path / "checkpoints"
    for n in range(1, 8):
        (root / f"step-{n:06d}").mkdir(parents=True)
    for n in (2, 4, 6):
        (root / f"training-state-{n:06d}").mkdir()
    prune_checkpoints(tmp_path, 7, keep_last=2, save_every=5, total_steps=10)
    assert sorted(p.name for p in root.glob("training-state-*")) == ["training-state-000004", "training-state-000006"]
    # weights: the kept states' (4, 6), the last two steps (6, 7), save_every (5)
    assert sorted(int(p.name[5:]) for p in root.glob("step-*")) == [4, 5, 6, 7]
    prune_checkpoints(tmp_path, 3, keep_last=1, save_every=5, total_steps=10)  # re-running an earlier step
    assert sorted(p.name for p in root.glob("training-state-*")) == ["training-state-000004", "training-state-000006"]


def _written_at(folder):
    return json.loads((folder / "_COMPLETE").read_text())["written_at"]


def test_killed_between_states_resumes_from_the_last_and_matches_a_state_every_step(micro_path, tmp_path,
                                                                                     monkeypatch):
    four = ["train.total_steps=4", "train.save_every=4", "eval.at_start=false", "eval.at_end=false"]
    ref = tmp_path / "ref"
    train(micro_cfg(*four), ref)
    out, cfg = tmp_path / "sparse", micro_cfg(*four, "train.state_every=2")
    original = Run.run_stage

    def killed_in_step_four(self, stage, step=0, force=False, strict=False):
        if stage == "reward" and step == 4:
            raise KeyboardInterrupt("simulated kill")
        return original(self, stage, step, force, strict)

    monkeypatch.setattr(Run, "run_stage", killed_in_step_four)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out)
    monkeypatch.setattr(Run, "run_stage", original)
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step-000002", "training-state-000002"]  # nothing after step 2
    step3 = {s: _written_at(out / "steps" / "000003" / s) for s in STAGES}
    train(cfg, out)  # resumes after step 2: step 3's update again (its rollouts reused), then step 4
    again = {s: _written_at(out / "steps" / "000003" / s) for s in STAGES}
    assert {s for s in STAGES if again[s] != step3[s]} == {"update"}
    final = "checkpoints/step-000004/model.safetensors"
    assert (out / final).read_bytes() == (ref / final).read_bytes()
    assert sorted(p.name for p in ck.iterdir()) == ["step-000002", "step-000004", "training-state-000002",
                                                   "training-state-000004"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
