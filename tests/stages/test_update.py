"""update: one real optimisation step; accumulation equals one big batch; off-policy mini-batches."""

import math

import pytest
import torch
from accelerate import Accelerator

from pipeline import schema as S
from pipeline.config import ObjectiveConfig, UpdateConfig
from pipeline.policy import TrainState, make_optimizer
from stages import update
from tests.conftest import tiny_qwen2


def _reward_ds(groups=2, n=4, seed=0, k=1):
    g = torch.Generator().manual_seed(seed)
    cols = {c: [] for c in (S.STEP, S.GROUP_ID, S.SLOT, S.IS_HYBRID, S.HINT_LEN, S.PROMPT_IDS, S.PREFIX_IDS,
                            S.PREFIX_LEN, S.COMPLETION_IDS, S.REWARD)}
    for gi in range(groups):
        prompt = torch.randint(1, 40, (5 + gi,), generator=g).tolist()
        for slot in range(n):
            hybrid = slot >= n - k
            prefix = torch.randint(1, 40, (6,), generator=g).tolist() if hybrid else []
            comp = torch.randint(1, 40, (3 + (slot * 3 + gi) % 5,), generator=g).tolist()
            for col, v in ((S.STEP, 1), (S.GROUP_ID, gi), (S.SLOT, slot), (S.IS_HYBRID, hybrid), (S.HINT_LEN, 0),
                           (S.PROMPT_IDS, prompt),
                           (S.PREFIX_IDS, prefix), (S.PREFIX_LEN, len(prefix)), (S.COMPLETION_IDS, comp),
                           (S.REWARD, float((slot + gi) % 2))):
                cols[col].append(v)
    return S.make_dataset(cols)


def _policy(lr=1e-2, **ucfg):
    model = tiny_qwen2(vocab_size=40)
    cfg = UpdateConfig(lr=lr, weight_decay=0.0, **ucfg)
    opt, sched = make_optimizer(model, cfg)
    acc = Accelerator(cpu=True)
    model, opt, sched = acc.prepare(model, opt, sched)
    return TrainState(model, opt, sched, 0, "base"), cfg, acc


def _ctx(state, acc, step=1):
    return update.UpdateContext(policy=state, accelerator=acc, pad_id=0, temperature=1.0, max_response_tokens=16,
                                seed=0, step=step)


def _step(ds, objective=ObjectiveConfig(), grads=None, **ucfg):
    """One update; `grads` (a list) receives the gradients each optimizer step saw."""
    state, cfg, acc = _policy(**ucfg)
    before = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
    if grads is not None:
        inner = state.optimizer.step

        def capture(*a, **k):
            grads.append({n: p.grad.detach().clone() for n, p in state.model.named_parameters() if p.grad is not None})
            return inner(*a, **k)

        state.optimizer.step = capture
    metrics, stats = update.run(ds, cfg, objective, _ctx(state, acc))
    return state, before, metrics, stats


def test_one_step_changes_weights_and_reports_finite_loss():
    ds = _reward_ds()
    state, before, metrics, stats = _step(ds)
    after = state.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])
    assert set(update.REQUIRES) <= set(ds.column_names)
    assert len(metrics) == len(ds) and S.ADVANTAGE in metrics.column_names
    # rewards alternate 0/1 within each group of 4 (mean 0.5): advantages are +-0.5
    assert sorted(set(metrics[S.ADVANTAGE])) == [-0.5, 0.5]
    # every prefix has 6 tokens; gate keeps 2 - floor(0.8 * 2*6... per micro-batch) -> counted, <= 20%
    assert 0 < stats["kept_prefix_tokens"] <= math.ceil(0.2 * stats["prefix_tokens"]) + 1


def _weights(state):
    return {k: v.detach().clone() for k, v in state.model.state_dict().items()}


@pytest.mark.parametrize("objective", [ObjectiveConfig(gate="all"), ObjectiveConfig(gate="top", gate_scope="step"),
                                       ObjectiveConfig(gate="none", loss_agg="token_mean")])
def test_gradient_accumulation_equals_one_big_batch(objective):
    # m micro-batches of 2 sequences accumulate exactly the gradient of one batch of 12 (the normaliser
    # counts the whole mini-batch); compared on gradients, since Adam's first step is ~lr * sign(g)
    ds = _reward_ds(groups=3)
    g_big, g_small = [], []
    _, _, _, s_big = _step(ds, objective, g_big, micro_batch_size=64)
    _, _, _, s_small = _step(ds, objective, g_small, micro_batch_size=2)
    gb, gs = g_big[0], g_small[0]
    assert set(gb) == set(gs)
    assert max((gb[k] - gs[k]).abs().max().item() for k in gb) < 1e-7
    assert max(gb[k].abs().max().item() for k in gb) > 1e-4
    assert s_big["loss"] == pytest.approx(s_small["loss"], rel=1e-5, abs=1e-7)
    assert s_big["grad_norm"] == pytest.approx(s_small["grad_norm"], rel=1e-4)


def test_gate_all_with_ratio_one_equals_no_gate():
    ds = _reward_ds()
    a, _, _, _ = _step(ds, ObjectiveConfig(gate="all"))
    b, _, _, _ = _step(ds, ObjectiveConfig(gate="top", keep_ratio=1.0))
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_first_mini_batch_is_on_policy_later_ones_are_not():
    ds = _reward_ds(groups=4)
    _, _, _, one = _step(ds, ObjectiveConfig(entropy_coef=0.0), mini_batches=1)
    assert one["ratio_max"] == pytest.approx(1.0, abs=1e-6) and one["clip_frac"] == 0.0
    _, _, _, two = _step(ds, ObjectiveConfig(entropy_coef=0.0), mini_batches=2, lr=0.05)
    assert two["ratio_max"] > 1.0 + 1e-4  # the second mini-batch sees the updated policy: a real ratio


def test_zero_advantage_and_no_entropy_bonus_means_no_update():
    ds = _reward_ds()
    ds = ds.map(lambda r: {S.REWARD: 1.0})  # every group all-correct: A = 0 everywhere
    state, before, _, stats = _step(ds, ObjectiveConfig(entropy_coef=0.0), max_grad_norm=0.0)
    after = state.model.state_dict()
    assert stats["grad_norm"] == 0.0
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("objective", [ObjectiveConfig(), ObjectiveConfig(prefix_loss="shaped", gate="all"),
                                       ObjectiveConfig(prefix_loss="nll", advantage="exclude_hybrid")])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_reference_logprobs_equal_the_separate_pass_bit_for_bit(objective, precision, monkeypatch):
    # bf16 even on a CPU that only emulates it (pipeline/precision.py would compute in fp32 there)
    monkeypatch.setattr("pipeline.precision.cpu_bf16_is_native", lambda: True)
    # one mini-batch: old_logp = logp.detach() from the update's own forward is the pre-update policy,
    # so skipping the separate no-grad pass changes neither the weights nor the logged statistics
    assert not update.separate_old_pass(UpdateConfig(), step_gate=False)
    assert update.separate_old_pass(UpdateConfig(mini_batches=2), step_gate=False)
    assert update.separate_old_pass(UpdateConfig(), step_gate=True)
    ds = _reward_ds(groups=3)
    fused, _, m_fused, s_fused = _step(ds, objective, micro_batch_size=4, precision=precision)
    sep, _, m_sep, s_sep = _step(ds, objective, micro_batch_size=4, precision=precision, old_logprob_pass="always")
    wf, ws = _weights(fused), _weights(sep)
    assert all(torch.equal(wf[k], ws[k]) for k in wf)
    assert s_fused.pop("separate_old_logprob_pass") == 0.0 and s_sep.pop("separate_old_logprob_pass") == 1.0
    timing = [k for k in s_fused if k.startswith("seconds")]
    assert {k: v for k, v in s_fused.items() if k not in timing} == {k: v for k, v in s_sep.items() if k not in timing}
    assert m_fused.to_pandas().equals(m_sep.to_pandas())  # NaN where both have NaN


def test_reference_entropy_norm_is_the_micro_batch_token_mean_over_sequences():
    # one micro-batch of all 8 sequences: verl's token mean H, divided by the 8 sequences (config docstring);
    # `loss_agg` (constant): token sum / (8 * L_max), L_max = 16 here
    ds = _reward_ds()
    _, _, _, ref = _step(ds, ObjectiveConfig(entropy_norm="reference"), micro_batch_size=8, mini_batches=1)
    _, _, _, agg = _step(ds, ObjectiveConfig(), micro_batch_size=8, mini_batches=1)
    tokens = sum(len(c) for c in ds[S.COMPLETION_IDS])
    mean_h = ref["entropy"]  # the step's token-mean entropy of generated tokens
    assert ref["entropy_loss"] == pytest.approx(mean_h / 8, rel=1e-5)
    assert agg["entropy_loss"] == pytest.approx(agg["entropy"] * tokens / (8 * 16), rel=1e-5)
    # two micro-batches of 4: the sum of their token means over 8
    _, _, _, two = _step(ds, ObjectiveConfig(entropy_norm="reference"), micro_batch_size=4, mini_batches=1)
    assert two["entropy_loss"] != pytest.approx(ref["entropy_loss"], rel=1e-6)
    assert two["entropy_loss"] == pytest.approx(mean_h / 8 * 2, rel=0.5)
