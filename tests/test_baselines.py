"""The baselines' formulas and layouts against hand-computed values (docs/method.md §2-§6, §9, §10), and the
equivalences that pin the relations between methods. The arithmetic is in the comments."""

import math

import pytest
import torch

from pipeline import methods
from pipeline.batching import token_lists
from pipeline import schema as S
from pipeline.config import ConfigError, ObjectiveConfig, PrefixConfig, load_config
from pipeline.objectives import nll_loss, shaped_pg_loss
from stages import prefixes, replay, step_stages, update
from tests.stages.test_update import _ctx, _policy, _reward_ds


def t(x):
    return torch.tensor(x, dtype=torch.float32)


# ---------------------------------------------------------------- LUFFY policy shaping (docs/method.md §10)

def test_shaped_loss_hand_values():
    # p = 0.5, gamma = 0.1, A = 1: l = -0.5 / 0.6 = -0.833333
    # p = 0.1, gamma = 0.1, A = -2: l = 2 * 0.1 / 0.2 = 1.0
    logp = torch.log(t([[0.5, 0.1]]))
    assert shaped_pg_loss(logp, t([[1.0, -2.0]]), 0.1)[0].tolist() == pytest.approx([-0.5 / 0.6, 1.0])


def test_shaped_gradient_wrt_logp():
    # dl/dlogp = -A gamma p / (p + gamma)^2: p = 0.5, gamma = 0.1, A = 1 -> -0.1 * 0.5 / 0.36 = -0.138889
    # (the plain PG term -A p would give -0.5: shaping up-weights unlikely tokens, down-weights likely ones)
    logp = torch.log(t([0.5])).requires_grad_()
    shaped_pg_loss(logp, t([1.0]), 0.1).sum().backward()
    assert logp.grad.item() == pytest.approx(-0.1 * 0.5 / 0.36, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.1, 1e-6])
def test_shaped_gradient_on_a_one_token_demo_wrt_logits(gamma):
    # One demonstration token (index 0) under softmax logits z = [0, ln 3] -> p0 = 1/4, p1 = 3/4.
    # l = -A p0/(p0+g); dl/dz_j = -A g p0 / (p0+g)^2 * (delta_0j - p_j)
    # gamma = 0.1, A = 1: g p0/(p0+g)^2 = 0.025 / 0.1225 = 0.204082 -> grad = [-0.204082*0.75, +0.204082*0.75]
    # gamma -> 0: f(p) -> 1, a constant: the demo token gets (almost) no gradient at all
    z = t([0.0, math.log(3.0)]).requires_grad_()
    logp = torch.log_softmax(z, -1)[0]
    shaped_pg_loss(logp, t(1.0), gamma).backward()
    scale = gamma * 0.25 / (0.25 + gamma) ** 2
    assert z.grad.tolist() == pytest.approx([-scale * 0.75, scale * 0.75], abs=1e-6)
    if gamma < 1e-3:
        assert z.grad.abs().max() < 1e-4


# ---------------------------------------------------------------- NLL / SFT (docs/method.md §2 SFT row, §9 caveat)

def test_nll_is_token_level_over_the_whole_batch():
    # two micro-batches: 3 tokens with logp -1 each, 1 token with logp -5; global count 4
    # token mean over the batch = (3 + 5) / 4 = 2.0; the per-micro-batch mean would give (1 + 5) / 2 = 3.0
    a = nll_loss(t([[-1.0, -1.0, -1.0]]), t([[1.0, 1.0, 1.0]]), 4)
    b = nll_loss(t([[-5.0, -9.0]]), t([[1.0, 0.0]]), 4)  # the masked -9 does not count
    assert float(a + b) == pytest.approx(2.0)


def _capture(state):
    grads = []
    inner = state.optimizer.step

    def capture(*a, **k):
        grads.append({n: p.grad.detach().clone() for n, p in state.model.named_parameters() if p.grad is not None})
        return inner(*a, **k)

    state.optimizer.step = capture
    return grads


def _sft_rows(lengths=(3, 9, 2, 7, 5)):
    g = torch.Generator().manual_seed(1)
    n = len(lengths)
    demos = [torch.randint(1, 40, (k,), generator=g).tolist() for k in lengths]
    return S.make_dataset({S.STEP: [1] * n, S.GROUP_ID: list(range(n)), S.SLOT: [0] * n, S.IS_HYBRID: [True] * n,
                           S.HINT_LEN: [0] * n, S.PROMPT_IDS: [[1, 2, 3 + i] for i in range(n)],
                           S.PREFIX_IDS: demos})


def _sft_step(ds, **ucfg):
    state, cfg, acc = _policy(**ucfg)
    grads = _capture(state)
    _, stats = update.run(None, cfg, ObjectiveConfig(), _ctx(state, acc), sft_ds=ds, sft_lr=1e-3)
    return grads, stats, state


def test_sft_accumulation_over_micro_batches_equals_one_big_batch():
    # demonstrations of 3, 9, 2, 7, 5 tokens: 5 micro-batches of 1 must give the gradient of one batch of 5
    # (loss = sum of NLL over all 26 tokens / 26; a per-micro-batch mean would weight the 2-token demo
    # like the 9-token one)
    ds = _sft_rows()
    g_big, s_big, _ = _sft_step(ds, micro_batch_size=64)
    g_small, s_small, _ = _sft_step(ds, micro_batch_size=1)
    assert len(g_big) == len(g_small) == 1  # one optimizer step
    assert max((g_big[0][k] - g_small[0][k]).abs().max().item() for k in g_big[0]) < 1e-7
    assert s_big["nll_loss"] == pytest.approx(s_small["nll_loss"], rel=1e-5)
    # the loss is the token mean of the pre-update NLL over all 26 tokens
    assert s_big["nll_loss"] == pytest.approx(s_big["demo_nll"], rel=1e-5)
    assert s_big["prefix_tokens"] == 26 and s_big["lr"] == 1e-3 and s_big["pg_loss"] == 0.0


def test_sft_step_uses_sft_lr_and_the_next_rl_step_the_schedule():
    # RL lr 1e-2 (no warm-up), SFT lr 1e-3: the SFT step's optimizer step runs at 1e-3, the RL step that
    # follows at 1e-2 again (the SFT step neither advances nor overwrites the RL schedule)
    state, cfg, acc = _policy(lr=1e-2)
    seen = []
    inner = state.optimizer.step

    def capture(*a, **k):
        seen.append(state.optimizer.param_groups[0]["lr"])
        return inner(*a, **k)

    state.optimizer.step = capture
    update.run(None, cfg, ObjectiveConfig(), _ctx(state, acc), sft_ds=_sft_rows((4, 4)), sft_lr=1e-3)
    update.run(_reward_ds(), cfg, ObjectiveConfig(), _ctx(state, acc))
    assert seen == pytest.approx([1e-3, 1e-2])


# ---------------------------------------------------------------- equivalences between methods

def _rl_step(ds, objective, **ucfg):
    state, cfg, acc = _policy(**ucfg)
    grads = _capture(state)
    _, stats = update.run(ds, cfg, objective, _ctx(state, acc))
    return grads, stats


def _same_grads(a, b, tol=0.0):
    return set(a) == set(b) and max((a[k] - b[k]).abs().max().item() for k in a) <= tol


def test_prefix_rft_with_k_zero_is_exactly_the_rft_update():
    # k = 0: no demonstration token exists, so no prefix option (gate, keep ratio, prefix loss, shaping,
    # prefix clipping) can change the update; all equal the RFT recipe's objective bit for bit
    ds = _reward_ds(k=0)
    rft_objective = load_config("rft").objective
    ref, _ = _rl_step(ds, rft_objective)
    for variant in (ObjectiveConfig(gate="bottom", keep_ratio=0.5), ObjectiveConfig(gate="none"),
                    ObjectiveConfig(prefix_loss="shaped"), ObjectiveConfig(prefix_loss="nll", nll_coef=3.0),
                    ObjectiveConfig(clip_prefix=False), ObjectiveConfig(gate_scope="step")):
        got, _ = _rl_step(ds, variant)
        assert _same_grads(ref[0], got[0]), variant
    # ... and with one hybrid per group the gate does matter (the comparison above can fail)
    with_k, _ = _rl_step(_reward_ds(k=1), ObjectiveConfig(gate="all"))
    with_k_none, _ = _rl_step(_reward_ds(k=1), ObjectiveConfig(gate="none"))
    assert not _same_grads(with_k[0], with_k_none[0], tol=1e-9)


def test_exclude_hybrid_equals_group_when_there_is_no_hybrid():
    ds = _reward_ds(k=0)
    a, _ = _rl_step(ds, ObjectiveConfig(advantage="group"))
    b, _ = _rl_step(ds, ObjectiveConfig(advantage="exclude_hybrid"))
    assert _same_grads(a[0], b[0])


def test_unclipped_continuation_differs_only_off_policy():
    # one mini-batch: ratio = 1 everywhere, clipping is inactive, clip_continuation changes nothing;
    # two mini-batches: the second is off-policy and clipping can bite (lr large enough to move ratios)
    ds = _reward_ds(groups=4)
    a, _ = _rl_step(ds, ObjectiveConfig(entropy_coef=0.0))
    b, _ = _rl_step(ds, ObjectiveConfig(entropy_coef=0.0, clip_continuation=False))
    assert _same_grads(a[0], b[0])
    _, s = _rl_step(ds, ObjectiveConfig(entropy_coef=0.0, clip_continuation=False, clip_prefix=False),
                    mini_batches=2, lr=0.05)
    assert s["clip_frac"] == 0.0 and s["ratio_max"] > 1.0 + 1e-4


def test_nll_prefix_loss_adds_weighted_demo_nll():
    # prefix_loss nll with coef c: stats report nll_loss = c x token-mean NLL of the demo tokens
    ds = _reward_ds()
    _, s1 = _rl_step(ds, ObjectiveConfig(prefix_loss="nll", nll_coef=1.0))
    _, s2 = _rl_step(ds, ObjectiveConfig(prefix_loss="nll", nll_coef=0.5))
    assert s1["nll_loss"] == pytest.approx(s1["demo_nll"], rel=1e-5)
    assert s2["nll_loss"] == pytest.approx(0.5 * s1["nll_loss"], rel=1e-5)
    assert s1["kept_prefix_tokens"] == s1["prefix_tokens"] == 12  # 2 hybrids x 6 tokens, never gated


# ---------------------------------------------------------------- prefix layouts (docs/method.md §3, §10)

def _curated(n=3, demo_len=20):
    return S.make_dataset({
        S.ID: [f"p{i}" for i in range(n)], S.SOURCE: ["t"] * n, S.LEVEL: [1] * n, S.ANSWER: [str(i) for i in range(n)],
        S.PROMPT_IDS: [[1, 2, i] for i in range(n)], S.DEMO_IDS: [list(range(100, 100 + demo_len)) for _ in range(n)],
    })


@pytest.mark.parametrize("demo_len, kept, chunks, expected", [
    (10, 2, 5, 4),    # boundaries round(j/5 * 10) = 2, 4, 6, 8, 10 -> 2 chunks = 4 tokens
    (7, 2, 5, 3),     # round(2/5 * 7) = round(2.8) = 3
    (3, 1, 5, 1),     # n = min(5, 3) = 3 chunks: round(1/3 * 3) = 1
    (10, 5, 5, 10),   # every chunk: the whole demonstration
    (10, 0, 5, 0),    # no chunk: no hint
])
def test_hint_length(demo_len, kept, chunks, expected):
    assert prefixes.hint_length(demo_len, kept, chunks) == expected


def test_hint_probability_follows_the_schedule_then_stops():
    cfg = PrefixConfig(low_start=0.95, low_end=0.05)
    # step 5 of horizon 10: cosine at the midpoint = 0.05 + 0.45 = 0.5; after the horizon: no hint at all
    assert prefixes.hint_probability(5, cfg, 10) == pytest.approx(0.5)
    assert prefixes.hint_probability(11, cfg, 10) == 0.0


def test_full_layout_is_the_whole_demonstration_and_end_of_turn():
    cfg = PrefixConfig(prompts_per_step=2, samples_per_prompt=4, hybrids_per_prompt=1, layout="full")
    out = prefixes.run(_curated(), cfg, step=1, horizon=10, seed=0, max_response_tokens=64, end_ids=[7, 8])
    for r in out:
        if r[S.IS_HYBRID]:
            assert r[S.IS_DEMO] and r[S.PREFIX_IDS] == list(range(100, 120)) + [7, 8]
            assert r[S.PREFIX_RATIO] == 1.0 and r[S.HINT_LEN] == 0
        else:
            assert not r[S.IS_DEMO] and r[S.PREFIX_IDS] == []
    cut = prefixes.run(_curated(), cfg, step=1, horizon=10, seed=0, max_response_tokens=16, end_ids=[7, 8])
    assert max(cut[S.PREFIX_LEN]) == 16  # cut at L_max


def test_hint_layout_shares_one_hint_per_group_in_the_prompt():
    cfg = PrefixConfig(prompts_per_step=3, samples_per_prompt=4, hybrids_per_prompt=4, layout="hint",
                       hint_chunks=5, low_start=0.95, low_end=0.05)
    out = prefixes.run(_curated(), cfg, step=1, horizon=10, seed=0, max_response_tokens=64)
    for g in range(3):
        rows = [r for r in out if r[S.GROUP_ID] == g]
        h = rows[0][S.HINT_LEN]
        assert h in {0, 4, 8, 12, 16, 20}  # 20-token demos, 5 chunks of 4
        for r in rows:
            assert r[S.HINT_LEN] == h and r[S.PREFIX_IDS] == [] and not r[S.IS_DEMO]
            assert r[S.PROMPT_IDS] == [1, 2, int(r[S.ID][1:])] + list(range(100, 100 + h))
            assert r[S.PREFIX_RATIO] == pytest.approx(h / 20)
    late = prefixes.run(_curated(), cfg, step=11, horizon=10, seed=0, max_response_tokens=64)
    assert set(late[S.HINT_LEN]) == {0}  # past the hint horizon


def test_update_moves_the_hint_from_the_prompt_to_the_demonstration_tokens():
    ds = S.make_dataset({S.PROMPT_IDS: [[1, 2, 3, 100, 101], [1, 2]], S.HINT_LEN: [2, 0],
                         S.PREFIX_IDS: [[], [5]], S.COMPLETION_IDS: [[9], [8]]})
    prompts, demo, comp = token_lists(ds)
    assert prompts == [[1, 2, 3], [1, 2]] and demo == [[100, 101], [5]] and comp == [[9], [8]]


# ---------------------------------------------------------------- ReLIFT buffer (docs/method.md §10)

def test_failed_prompts_are_zero_of_n_on_policy():
    # group 0: on-policy 0, 0 and a correct hybrid -> failed (hybrids do not count);
    # group 1: one on-policy success -> not failed
    ds = S.make_dataset({S.ID: ["a", "a", "a", "b", "b"], S.GROUP_ID: [0, 0, 0, 1, 1],
                         S.IS_HYBRID: [False, False, True, False, False], S.REWARD: [0.0, 0.0, 1.0, 0.0, 1.0]})
    assert replay.failed_prompts(ds) == ["a"]


def test_release_is_a_fifo_of_buffer_size():
    # buffer 2: step 1 [a, b] -> release a, b; step 2 [c] -> wait; step 3 [c, d, e, f] -> release c, d
    assert replay.release([["a", "b"]], 2) == (["a", "b"], 0)
    assert replay.release([["a", "b"], ["c"]], 2) == ([], 1)
    assert replay.release([["a", "b"], ["c"], ["d", "e", "f"]], 2) == (["c", "d"], 2)


def test_replay_rows_are_whole_demonstrations():
    curated = _curated(2, 5)
    ds, stats = replay.run(curated, [["p1"], []], buffer_size=1, step=2, max_response_tokens=64, end_ids=[7])
    assert stats == {"failed_this_step": 0, "released": 0, "waiting": 0}  # p1 was released at step 1
    ds, stats = replay.run(curated, [["p1"]], buffer_size=1, step=1, max_response_tokens=64, end_ids=[7])
    assert stats["released"] == 1 and ds[S.ID] == ["p1"]
    assert ds[S.PREFIX_IDS] == [[100, 101, 102, 103, 104, 7]] and ds[S.IS_DEMO] == [True]


# ---------------------------------------------------------------- method schedule (pipeline/methods.py)

RL_STAGES = ("prefixes", "generate", "reward", "update")
REPLAY_STAGES = ("prefixes", "generate", "reward", "replay", "update")
SFT_STAGES = ("prefixes", "update")


def test_method_step_stages():
    sft_rft = load_config("sft-then-rft", ["sft.steps=2", "train.total_steps=4"])
    assert [step_stages(sft_rft, s) for s in (1, 2, 3)] == [SFT_STAGES] * 2 + [RL_STAGES]
    assert [methods.fresh_optimizer(sft_rft, s) for s in (1, 2, 3, 4)] == [False, False, True, False]
    assert step_stages(load_config("relift"), 1) == REPLAY_STAGES
    assert step_stages(load_config("sft"), 7) == SFT_STAGES
    assert step_stages(load_config("quickstart"), 1) == RL_STAGES
    p = methods.prefix_config(load_config("sft", ["sft.batch_size=5"]), 1)
    assert (p.prompts_per_step, p.samples_per_prompt, p.hybrids_per_prompt, p.layout) == (5, 1, 1, "full")


def test_sft_lr_warmup():
    cfg = load_config("sft", ["sft.lr=1e-4", "sft.warmup_steps=4"])
    # linear warm-up over 4 steps: 1/4, 2/4, 4/4, then constant
    assert [methods.sft_lr(cfg, s) for s in (1, 2, 4, 9)] == pytest.approx([2.5e-5, 5e-5, 1e-4, 1e-4])


def test_sft_lr_cosine_decay_ends_at_the_phase_last_step():
    # warm-up 4 of 12 steps, then a half cosine over the 8 steps after it, down to 0.1 x lr:
    # step 8 is half-way (cos(pi/2) = 0): 0.1 + 0.9 * 0.5 = 0.55; step 6 a quarter: 0.1 + 0.9 * (1 + 0.7071) / 2
    cfg = load_config("sft", ["sft.lr=1e-4", "sft.warmup_steps=4", "sft.decay=cosine", "sft.min_lr_ratio=0.1",
                              "train.total_steps=12"])
    assert [methods.sft_lr(cfg, s) for s in (2, 4, 6, 8, 12, 13)] == pytest.approx(
        [5e-5, 1e-4, 0.8682e-4, 0.55e-4, 0.1e-4, 0.1e-4], rel=1e-4)
    # under then_rl the SFT phase ends at sft.steps, not at the run's last step
    cfg = load_config("sft-then-rft", ["sft.lr=1e-4", "sft.warmup_steps=0", "sft.decay=cosine", "sft.steps=10", "train.total_steps=40"])
    assert [methods.sft_lr(cfg, s) for s in (0, 5, 10)] == pytest.approx([1e-4, 0.5e-4, 0.0], abs=1e-12)


@pytest.mark.parametrize("override, message", [
    (["sft.mode=then_rl", "sft.steps=0"], r"sft.steps: under sft.mode=then_rl must be in \[1, train.total_steps - 1\]"),
    (["sft.mode=then_rl", "sft.steps=500", "train.total_steps=500"], r"sft.steps"),
    (["objective.shaping_gamma=0"], r"objective.shaping_gamma"),
    (["objective.nll_coef=-1"], r"objective.nll_coef=-1.0 is out of range"),
    (["objective.prefix_loss=kl"], r"objective.prefix_loss='kl' is not allowed"),
    (["prefixes.layout=middle"], r"prefixes.layout='middle' is not allowed"),
    (["prefixes.hint_chunks=0"], r"prefixes.hint_chunks=0 is out of range"),
    (["sft.mode=sometimes"], r"sft.mode='sometimes' is not allowed"),
    (["sft.buffer_size=0"], r"sft.buffer_size=0 is out of range"),
    (["model.rope_theta=0"], r"model.rope_theta"),
])
def test_method_options_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", override)


def test_fresh_optimizer_after_sft_equals_a_new_run_from_the_sft_weights():
    # SFT -> RFT: the first RL step after the SFT phase starts with empty Adam moments, exactly as a
    # second run started from the SFT checkpoint would (weights compared bit for bit)
    a, cfg, acc = _policy(lr=1e-2)
    update.run(None, cfg, ObjectiveConfig(), _ctx(a, acc, step=1), sft_ds=_sft_rows(), sft_lr=1e-2)
    sft_weights = {k: v.detach().clone() for k, v in a.model.state_dict().items()}
    update.run(_reward_ds(), cfg, ObjectiveConfig(), _ctx(a, acc, step=2), fresh_optimizer=True)
    b, _, _ = _policy(lr=1e-2)
    b.model.load_state_dict(sft_weights)
    update.run(_reward_ds(), cfg, ObjectiveConfig(), _ctx(b, acc, step=2))
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # without the reset the SFT step's moments carry over and the weights differ
    c, _, _ = _policy(lr=1e-2)
    update.run(None, cfg, ObjectiveConfig(), _ctx(c, acc, step=1), sft_ds=_sft_rows(), sft_lr=1e-2)
    update.run(_reward_ds(), cfg, ObjectiveConfig(), _ctx(c, acc, step=2))
    assert not all(torch.equal(wa[k], c.model.state_dict()[k]) for k in wa)


def _luffy_group():
    # one group: an on-policy row (1 generated token, reward 0) and the whole demonstration as its
    # hybrid member (1 demo token, nothing generated, reward 1)
    return S.make_dataset({S.STEP: [1, 1], S.GROUP_ID: [0, 0], S.SLOT: [0, 1], S.IS_HYBRID: [False, True],
                           S.HINT_LEN: [0, 0], S.PROMPT_IDS: [[3, 4, 5], [3, 4, 5]], S.PREFIX_IDS: [[], [7]],
                           S.PREFIX_LEN: [0, 1], S.COMPLETION_IDS: [[9], []], S.REWARD: [0.0, 1.0]})


@pytest.mark.parametrize("gamma", [0.1, 1e-6])
def test_luffy_update_on_a_one_token_demo_matches_the_hand_computed_loss(gamma):
    # Dr. GRPO over both members: mean 0.5 -> A = -0.5 (on-policy), +0.5 (demo).
    # on-policy token at ratio 1: -A r = 0.5 (unclipped); demo token: -A p/(p+gamma) = -0.5 p/(p+gamma),
    # p = exp(-demo_nll) of the demo token before the update; constant normaliser B * L_max = 2 * 16
    objective = ObjectiveConfig(prefix_loss="shaped", shaping_gamma=gamma, gate="all", clip_continuation=False,
                                dual_clip=0.0, entropy_coef=0.0)
    state, cfg, acc = _policy()
    rows, stats = update.run(_luffy_group(), cfg, objective, _ctx(state, acc))
    p = math.exp(-rows.filter(lambda r: r[S.IS_HYBRID])["demo_nll"][0])
    assert sorted(rows[S.ADVANTAGE]) == [-0.5, 0.5]
    assert stats["pg_loss"] == pytest.approx((0.5 - 0.5 * p / (p + gamma)) / 32, rel=1e-4, abs=1e-9)  # fp32
    if gamma < 1e-3:  # f(p) -> 1: the demo term is the constant -A = -0.5
        assert stats["pg_loss"] == pytest.approx((0.5 - 0.5) / 32, abs=1e-6)
