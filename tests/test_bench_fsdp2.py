"""scripts/bench_fsdp2.py needs CUDA, so its only CPU-runnable part, the synthetic rollouts, is checked here
against the update stage it feeds: once it lacked a column the stage had come to require, which the GPU
smoke run found."""

import importlib.util
from pathlib import Path

import torch

from pipeline import schema as S
from pipeline.config import ObjectiveConfig, UpdateConfig
from pipeline.distributed import make_accelerator, prepare_policy
from pipeline.policy import TrainState
from stages import update
from tests.conftest import tiny_qwen2


def _bench():
    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_fsdp2.py"
    spec = importlib.util.spec_from_file_location("bench_fsdp2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_rollouts_feed_a_real_update_step():
    ds = _bench().rollouts(groups=2, samples=4, prompt_len=5, response_len=8, step=1, vocab=40)
    S.require_columns(ds, update.REQUIRES, "update")
    assert len(ds) == 8 and ds[S.IS_HYBRID] == [False, False, False, True] * 2
    assert ds[S.PREFIX_LEN] == [0, 0, 0, 4] * 2 and set(ds[S.HINT_LEN]) == {0}
    assert all(len(p) + len(c) == 8 for p, c in zip(ds[S.PREFIX_IDS], ds[S.COMPLETION_IDS]))
    acc = make_accelerator()
    cfg = UpdateConfig(lr=1e-2, micro_batch_size=4)
    model, opt, sched = prepare_policy(acc, tiny_qwen2(vocab_size=40), cfg)
    before = [p.detach().clone() for p in model.parameters()]
    ctx = update.UpdateContext(policy=TrainState(model, opt, sched, 0, "bench", restored=True), accelerator=acc,
                               pad_id=0, temperature=1.0, max_response_tokens=8, seed=0, step=1)
    _, stats = update.run(ds, cfg, ObjectiveConfig(), ctx)
    assert torch.isfinite(torch.tensor(stats["loss"]))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
