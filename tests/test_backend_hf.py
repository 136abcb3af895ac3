"""transformers rollout backend: sampling rule, prefix continuation, budgets, stop tokens, seeds."""

import pytest
import torch

from pipeline.backends import GenerationRequest, SamplingParams
from pipeline.backends.hf import TransformersBackend, sample_from_logits
from tests.conftest import tiny_qwen2


def test_inverse_cdf_sampling_hand_values():
    # probs [0.1, 0.2, 0.7]: cdf [0.1, 0.3, 1.0]; u = 0.05 -> 0, 0.25 -> 1, 0.31 -> 2
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.7]] * 3))
    tok, lp = sample_from_logits(logits, SamplingParams(temperature=1.0), torch.tensor([0.05, 0.25, 0.31]))
    assert tok.tolist() == [0, 1, 2]
    assert torch.allclose(lp, torch.log(torch.tensor([0.1, 0.2, 0.7])))


def test_top_p_and_top_k_truncate_but_logprob_is_untruncated():
    # top_p 0.75: sorted [0.7, 0.2, 0.1]; mass before: [0, 0.7, 0.9] -> keep {0.7, 0.2}; renormalised cdf
    # [0.7/0.9, 1.0]; u = 0.99 -> the 0.2 token (index 1), never the 0.1 token
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.7]]))
    tok, lp = sample_from_logits(logits, SamplingParams(1.0, top_p=0.75), torch.tensor([0.99]))
    assert tok.tolist() == [1] and torch.allclose(lp, torch.log(torch.tensor([0.2])))
    tok, _ = sample_from_logits(logits, SamplingParams(1.0, top_k=1), torch.tensor([0.99]))
    assert tok.tolist() == [2]


def test_greedy_at_temperature_zero():
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    tok, lp = sample_from_logits(logits, SamplingParams(temperature=0.0), torch.tensor([0.9]))
    assert tok.tolist() == [1] and torch.allclose(lp, torch.log_softmax(logits, -1)[:, 1])


def _backend(batch_size=64):
    return TransformersBackend(tiny_qwen2(vocab_size=40), pad_token_id=0, batch_size=batch_size)


def test_budgets_prefix_and_logprobs_match_a_forward_pass():
    backend = _backend()
    reqs = [GenerationRequest([5, 6, 7], [], 6, seed=1), GenerationRequest([5, 6, 7], [9, 10, 11], 4, seed=2),
            GenerationRequest([8, 9], [12], 5, seed=3)]
    outs = backend.generate(reqs, SamplingParams(temperature=1.0))
    assert [len(o.token_ids) for o in outs] == [6, 4, 5]  # no stop token configured: full budgets
    assert all(o.finish_reason == "length" for o in outs)
    model = backend.model
    for r, o in zip(reqs, outs):  # returned log-probs are those of the policy on prompt + prefix + continuation
        seq = torch.tensor([r.prompt_ids + r.prefix_ids + o.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), -1)
        start = len(r.prompt_ids) + len(r.prefix_ids)
        ref = [logp[start - 1 + k, t].item() for k, t in enumerate(o.token_ids)]
        assert torch.allclose(torch.tensor(o.logprobs), torch.tensor(ref), atol=1e-4)


def test_same_seed_same_sample_regardless_of_batch():
    backend = _backend()
    req = GenerationRequest([5, 6, 7], [8], 8, seed=42)
    alone = backend.generate([req], SamplingParams(1.0))[0]
    others = [GenerationRequest([1, 2, 3, 4], [], 8, seed=s) for s in range(5)]
    mixed = backend.generate(others[:2] + [req] + others[2:], SamplingParams(1.0))[2]
    assert alone.token_ids == mixed.token_ids
    different = backend.generate([GenerationRequest([5, 6, 7], [8], 8, seed=43)], SamplingParams(1.0))[0]
    assert different.token_ids != alone.token_ids


def test_stop_tokens_end_a_row_and_are_included():
    backend = _backend()
    reqs = [GenerationRequest([5, 6, 7], [], 30, seed=s) for s in range(8)]
    free = backend.generate(reqs, SamplingParams(1.0))
    stop = free[0].token_ids[2]
    outs = backend.generate(reqs, SamplingParams(1.0, stop_token_ids=[stop]))
    first = outs[0]
    assert first.finish_reason == "stop" and first.token_ids[-1] == stop and len(first.token_ids) <= 3
    for o, f in zip(outs, free):  # rows are unaffected by other rows stopping early
        assert o.token_ids == f.token_ids[:len(o.token_ids)]


def test_chunking_by_batch_size_gives_the_same_rows():
    reqs = [GenerationRequest([3 + i % 3, 4, 5], [6] * (i % 2), 5, seed=i) for i in range(7)]
    a = _backend(batch_size=64).generate(reqs, SamplingParams(1.0))
    b = _backend(batch_size=3).generate(reqs, SamplingParams(1.0))
    assert [o.token_ids for o in a] == [o.token_ids for o in b]


def test_min_new_tokens_masks_stop_tokens_until_reached():
    backend = _backend()
    reqs = [GenerationRequest([5, 6, 7], [], 12, seed=s) for s in range(8)]
    stops = list(range(1, 36))  # 35 of 40 tokens stop: unconstrained rows end almost at once
    free = backend.generate(reqs, SamplingParams(1.0, stop_token_ids=stops))
    assert min(len(o.token_ids) for o in free) < 6
    outs = backend.generate(reqs, SamplingParams(1.0, stop_token_ids=stops, min_new_tokens=6))
    for o in outs:
        assert len(o.token_ids) >= 6 and not set(o.token_ids[:6]) & set(stops)
        assert all(lp > -1e30 for lp in o.logprobs)
    forced = backend.generate(reqs, SamplingParams(1.0, stop_token_ids=stops, min_new_tokens=12))
    assert all(len(o.token_ids) == 12 and o.finish_reason == "length" for o in forced)


def test_preallocated_cache_gives_bit_identical_rollouts(monkeypatch):
    # the rollout cache writes into one buffer instead of concatenating per token; the arithmetic must
    # not change: same tokens and the same log-prob bits as transformers' DynamicCache, with forced
    # prefixes, shared prompts and rows that stop early (rows dropped from the buffer mid-rollout).
    # Prefixes go through the decode loop here (prefill_prefixes=False) and prompts are copied per row
    # (shared_prompt=False): with prefill the buffer forwards only the hybrid rows while DynamicCache
    # forwards every row, and shared-prompt attention needs the buffer: other sums, the same values.
    from transformers import DynamicCache

    from pipeline.backends import hf

    reqs = [GenerationRequest([3 + i % 3, 4, 5, 6][: 2 + i % 3], [7, 8][: i % 3], 10, seed=i) for i in range(12)]
    sampling = SamplingParams(1.0, stop_token_ids=[9, 10, 11])
    model = tiny_qwen2(vocab_size=40)
    backend = TransformersBackend(model, pad_token_id=0, prefill_prefixes=False, shared_prompt=False)
    ours = backend.generate(reqs, sampling)
    prefill = TransformersBackend(model, pad_token_id=0, shared_prompt=False)
    prefilled = prefill.generate(reqs, sampling)
    monkeypatch.setattr(hf, "preallocated_cache", lambda config, capacity: DynamicCache(config=config))
    ref = backend.generate(reqs, sampling)
    assert len({len(o.token_ids) for o in ref}) > 2  # some rows stopped early
    assert [o.token_ids for o in ours] == [o.token_ids for o in ref]
    assert [o.logprobs for o in ours] == [o.logprobs for o in ref]
    assert [o.finish_reason for o in ours] == [o.finish_reason for o in ref]
    # the prefill path through DynamicCache (every row forwarded, prefix-less rows masked) agrees too
    dyn = prefill.generate(reqs, sampling)
    _assert_same_samples(model, reqs, dyn, prefilled)
    for r, o in zip(reqs, dyn):
        assert torch.allclose(torch.tensor(o.logprobs), torch.tensor(_reference_logprobs(model, r, o)), atol=1e-5)


def _mixed_prefix_requests(budget=12):
    # shared prompts, prefixes of lengths 0..9 in one batch (several groups, hybrids of different widths)
    return [GenerationRequest([3 + i % 3, 4, 5, 6][: 2 + i % 3], list(range(12, 12 + (7 * i) % 10)), budget, seed=i)
            for i in range(16)]


def _reference_logprobs(model, r, o):
    seq = torch.tensor([r.prompt_ids + r.prefix_ids + o.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), -1)
    start = len(r.prompt_ids) + len(r.prefix_ids)
    return [logp[start - 1 + k, t].item() for k, t in enumerate(o.token_ids)]


def _assert_same_samples(model, reqs, outs, others, tol=1e-4):
    # Two arithmetic paths for the same distribution sample the same tokens from the same uniforms, except
    # where a uniform falls within float error of a CDF boundary (then a neighbouring token, once). A row
    # may differ only there: both tokens adjacent, u·total within `tol` of the boundary between them.
    ties = 0
    for r, o, x in zip(reqs, outs, others):
        if o.token_ids == x.token_ids:
            continue
        k = next(i for i, (a, b) in enumerate(zip(o.token_ids, x.token_ids)) if a != b)
        a, b = sorted((o.token_ids[k], x.token_ids[k]))
        seq = torch.tensor([r.prompt_ids + r.prefix_ids + o.token_ids[:k]])
        with torch.no_grad():
            cdf = torch.softmax(model(input_ids=seq).logits[0, -1].float(), -1).cumsum(-1)
        u = torch.rand(r.max_new_tokens, generator=torch.Generator().manual_seed(r.seed))[k]
        assert b == a + 1 and abs(float(u * cdf[-1] - cdf[a])) < tol, (r, k, a, b)
        ties += 1
    assert ties <= max(1, len(reqs) // 8)  # near-ties are rare


@pytest.mark.parametrize("chunk", [512, 3])
def test_prefilled_prefixes_of_different_lengths_match_a_full_forward(chunk):
    # prefixes are prefilled (in 3-position chunks too), never decoded: the continuation's log-probs are
    # the policy's on the whole sequence, and the samples are those of forcing the prefix token by token
    reqs = _mixed_prefix_requests()
    assert len({len(r.prefix_ids) for r in reqs}) >= 6
    backend = TransformersBackend(tiny_qwen2(vocab_size=40), pad_token_id=0, prefill_chunk=chunk)
    outs = backend.generate(reqs, SamplingParams(1.0))
    assert [len(o.token_ids) for o in outs] == [12] * len(reqs)
    for r, o in zip(reqs, outs):
        assert torch.allclose(torch.tensor(o.logprobs), torch.tensor(_reference_logprobs(backend.model, r, o)),
                              atol=1e-5)
    decoded = TransformersBackend(backend.model, pad_token_id=0, prefill_prefixes=False).generate(
        reqs, SamplingParams(1.0))
    _assert_same_samples(backend.model, reqs, outs, decoded)


def test_prefilled_prefixes_with_early_stops_and_a_fixed_seed():
    reqs = _mixed_prefix_requests(budget=20)
    sampling = SamplingParams(1.0, stop_token_ids=[7, 8, 9])
    backend = _backend()
    outs = backend.generate(reqs, sampling)
    assert {o.finish_reason for o in outs} == {"stop", "length"}
    assert len({len(o.token_ids) for o in outs}) > 3  # rows leave the batch at different steps
    for r, o in zip(reqs, outs):
        assert (o.finish_reason == "stop") == (o.token_ids[-1] in (7, 8, 9))
        assert torch.allclose(torch.tensor(o.logprobs), torch.tensor(_reference_logprobs(backend.model, r, o)),
                              atol=1e-5)
    again = backend.generate(reqs, sampling)  # same seeds: bit-identical
    assert [(o.token_ids, o.logprobs, o.finish_reason) for o in again] == \
        [(o.token_ids, o.logprobs, o.finish_reason) for o in outs]
    alone = backend.generate([reqs[3]], sampling)[0]  # a hybrid row's sample does not depend on its batch
    assert reqs[3].prefix_ids and alone.token_ids == outs[3].token_ids
    reseeded = backend.generate([GenerationRequest(r.prompt_ids, r.prefix_ids, 20, r.seed + 100) for r in reqs],
                                sampling)
    assert [o.token_ids for o in reseeded] != [o.token_ids for o in outs]


def test_prefixes_are_never_decoded_token_by_token():
    # one forward for the prompts, one (chunk 512) for the hybrid rows' prefixes, then one per sampled token
    backend = _backend()
    calls = []
    forward = backend._forward
    backend._forward = lambda ids, *a: calls.append(tuple(ids.shape)) or forward(ids, *a)
    reqs = [GenerationRequest([5, 6, 7], [], 4, seed=0), GenerationRequest([5, 6, 7], list(range(10, 40)), 4, seed=1)]
    backend.generate(reqs, SamplingParams(1.0))
    assert calls == [(1, 3), (1, 30), (2, 1), (2, 1), (2, 1)]


def test_preallocated_cache_refuses_to_overflow():
    from pipeline.backends import hf

    model = tiny_qwen2(vocab_size=40)
    cache = hf.preallocated_cache(model.config, capacity=4)
    kw = {hf.cache_keyword(type(model)): cache}
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True, **kw)
        assert cache.get_seq_length() == 3
        model(input_ids=torch.tensor([[4]]), use_cache=True, **kw)
        with pytest.raises(RuntimeError, match="rollout cache overflow: 5 > 4"):
            model(input_ids=torch.tensor([[5]]), use_cache=True, **kw)


def test_row_selection_copies_the_filled_positions_and_keeps_the_capacity():
    # a prompt's cache repeated for each of its samples: rows may repeat, only the filled part is copied
    # (the unused capacity stays unwritten), and decoding goes on past the copy as before
    from pipeline.backends import hf

    model = tiny_qwen2(vocab_size=40)
    cache = hf.preallocated_cache(model.config, capacity=6)
    kw = {hf.cache_keyword(type(model)): cache}
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3], [4, 5, 6]]), use_cache=True, **kw)
        before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        cache.batch_select_indices(torch.tensor([1, 0, 1]))
        for layer, (k, v) in zip(cache.layers, before):
            assert layer._k.shape[0] == 3 and layer._k.shape[2] == 6
            assert torch.equal(layer.keys, k[[1, 0, 1]]) and torch.equal(layer.values, v[[1, 0, 1]])
        model(input_ids=torch.tensor([[7], [7], [7]]), use_cache=True, **kw)
        assert cache.get_seq_length() == 4


def test_distinct_prompts_skip_row_selection(monkeypatch):
    # every request its own prompt (an evaluation at one sample per problem): the prompt cache is already
    # in row order, and re-indexing the whole buffer was 60% of a held-out evaluation's time
    from pipeline.backends import kvcache

    calls = []
    cls = kvcache._preallocated_layer_class()
    orig = cls.batch_select_indices
    monkeypatch.setattr(cls, "batch_select_indices", lambda self, idx: calls.append(len(idx)) or orig(self, idx))
    backend = TransformersBackend(tiny_qwen2(vocab_size=40), pad_token_id=0, shared_prompt=False)
    sampling = SamplingParams(1.0, stop_token_ids=[9])
    backend.generate([GenerationRequest([3 + i, 4], [], 5, seed=i) for i in range(4)], sampling)
    assert calls == []
    backend.generate([GenerationRequest([3 + i % 2, 4], [], 5, seed=i) for i in range(4)], sampling)
    assert calls and set(calls) == {4}


def test_shared_prompt_attention_equals_attention_over_the_whole_row():
    # cascade attention (prompt once per group, one softmax over the parts' scores) = softmax attention
    # over [prompt ; own positions], for uneven groups (rows dropped), GQA and left-padded prompts
    from transformers.integrations.sdpa_attention import repeat_kv

    from pipeline.backends.cascade import SharedPrompt, attend, cascade_attention

    torch.manual_seed(0)
    g, hkv, rep, p, s, d = 3, 2, 2, 5, 4, 8
    kp, vp = torch.randn(g, hkv, p, d), torch.randn(g, hkv, p, d)
    valid = torch.ones(g, p, dtype=torch.bool)
    valid[1, :2] = False  # a shorter, left-padded prompt
    group = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    sp = SharedPrompt.build([kp], [vp], valid, group).select(torch.tensor([0, 2, 3, 5, 6]))  # two rows finished
    rows = len(sp.group)
    q, k, v = torch.randn(rows, hkv * rep, 1, d), torch.randn(rows, hkv, s, d), torch.randn(rows, hkv, s, d)
    own = torch.ones(rows, s, dtype=torch.bool)
    own[0, 1] = False  # a masked position in a row's own part (prefix padding)

    class Layer:
        layer_idx = 0

    # transformers' own mask is ignored (all False here): the rows' own positions come with `sp`
    out, _ = cascade_attention(Layer(), q, k, v, torch.zeros(rows, 1, 1, s, dtype=torch.bool), scaling=0.3,
                               shared_prompt=sp.with_own(own))  # [A, 1, Hq, D]
    k_all = repeat_kv(torch.cat([kp[sp.group], k], 2), rep)
    v_all = repeat_kv(torch.cat([vp[sp.group], v], 2), rep)
    mask = torch.cat([valid[sp.group][:, None, None, :], own[:, None, None, :]], -1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, scale=0.3)
    assert torch.allclose(out, ref.transpose(1, 2), atol=1e-5)
    # `attend` (the prefill's attention) and its log-sum-exp, on both code paths: matrix products for a
    # few queries, the CPU flash kernel for many
    for n_q in (1, 70):
        qn = torch.randn(rows, hkv * rep, n_q, d)
        maskn = mask.expand(-1, -1, n_q, -1).clone()
        maskn[1, :, -1] = False  # a query that attends to nothing: output 0, log-sum-exp -inf
        bias = torch.zeros(maskn.shape).masked_fill(~maskn, float("-inf"))
        o, lse = attend(qn, k_all, v_all, bias, 0.3)
        ok = maskn.any(-1)  # [A, 1, L]
        ref_n = torch.nn.functional.scaled_dot_product_attention(qn, k_all, v_all, attn_mask=maskn, scale=0.3)
        scores = (qn @ k_all.transpose(-1, -2)) * 0.3 + bias
        assert torch.allclose(lse[ok.expand_as(lse)], torch.logsumexp(scores, -1)[ok.expand_as(lse)], atol=1e-5)
        assert torch.allclose(o[ok.expand_as(lse)], ref_n[ok.expand_as(lse)], atol=1e-5)
        if n_q == 1:
            assert (o[1, :, -1] == 0).all() and torch.isinf(lse[1, :, -1]).all()


def test_decode_attention_equals_sdpa():
    # a CPU decode step with per-row prompts: plain matrix products over the GQA heads = transformers' SDPA
    # attention (repeat_kv + SDPA) with the padding mask, or without one
    from transformers.integrations.sdpa_attention import repeat_kv

    from pipeline.backends.cascade import cascade_attention

    torch.manual_seed(0)
    a, hkv, rep, s, d = 5, 2, 3, 7, 8
    q, k, v = torch.randn(a, hkv * rep, 1, d), torch.randn(a, hkv, s, d), torch.randn(a, hkv, s, d)
    mask = torch.ones(a, 1, 1, s, dtype=torch.bool)
    mask[2, ..., :3] = False  # a left-padded row

    class Layer:
        layer_idx = 0

    for m in (mask, None):
        out, _ = cascade_attention(Layer(), q, k, v, m, scaling=0.4)  # [A, 1, Hq, D]
        ref = torch.nn.functional.scaled_dot_product_attention(q, repeat_kv(k, rep), repeat_kv(v, rep),
                                                               attn_mask=m, scale=0.4)
        assert torch.allclose(out, ref.transpose(1, 2), atol=1e-6)


def test_shared_prompt_rollouts_match_per_row_prompts():
    from transformers import AttentionInterface

    from pipeline.backends import cascade

    seen = []
    cascade.register()
    AttentionInterface.register(cascade.NAME, lambda *a, shared_prompt=None, **k: seen.append(
        shared_prompt is not None) or cascade.cascade_attention(*a, shared_prompt=shared_prompt, **k))
    try:
        reqs = _mixed_prefix_requests(budget=16)
        sampling = SamplingParams(1.0, stop_token_ids=[7, 8])
        model = tiny_qwen2(vocab_size=40)
        shared = TransformersBackend(model, pad_token_id=0).generate(reqs, sampling)
        assert seen.count(True) > 10 and model.config._attn_implementation == "sdpa"  # restored after
        per_row = TransformersBackend(model, pad_token_id=0, shared_prompt=False).generate(reqs, sampling)
    finally:
        AttentionInterface.register(cascade.NAME, cascade.cascade_attention)
    assert len({len(o.token_ids) for o in shared}) > 3
    _assert_same_samples(model, reqs, shared, per_row)
    for r, o in zip(reqs, shared):
        assert torch.allclose(torch.tensor(o.logprobs), torch.tensor(_reference_logprobs(model, r, o)), atol=1e-5)


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_bf16_rollouts_with_prefixes_score_like_fp32(monkeypatch, shared_prompt):
    # under bf16 autocast (forced, as on a CPU with native bf16) the attention parts mix bf16 products with
    # fp32 scores; the log-probs stay those of a fp32 full-sequence forward up to bf16 rounding
    from pipeline import precision

    monkeypatch.setattr(precision, "cpu_bf16_is_native", lambda: True)
    reqs = _mixed_prefix_requests(budget=12)
    model = tiny_qwen2(vocab_size=40)
    outs = TransformersBackend(model, pad_token_id=0, precision="bf16", shared_prompt=shared_prompt).generate(
        reqs, SamplingParams(1.0, stop_token_ids=[7, 8]))
    for r, o in zip(reqs, outs):
        assert 1 <= len(o.token_ids) <= r.max_new_tokens
        ref = torch.tensor(_reference_logprobs(model, r, o))
        assert torch.allclose(torch.tensor(o.logprobs), ref, atol=0.1), (o.logprobs, ref)


def test_finished_rows_and_positions_nobody_attends_to_leave_the_cache():
    # per-row prompts (no cascade): the hybrid row (30-token prefix, budget 1) finishes at the first step;
    # the row without a prefix then decodes alone, and the 30 prefix positions in front of its prompt,
    # masked for it, are dropped with the finished row
    backend = TransformersBackend(tiny_qwen2(vocab_size=40), pad_token_id=0, shared_prompt=False)
    calls = []
    forward = backend._forward
    backend._forward = lambda ids, mask, *a: calls.append((tuple(ids.shape), mask.shape[1])) or forward(ids, mask, *a)
    reqs = [GenerationRequest([5, 6, 7], [], 4, seed=0), GenerationRequest([5, 6, 7], list(range(10, 40)), 1, seed=1)]
    outs = backend.generate(reqs, SamplingParams(1.0))
    assert [len(o.token_ids) for o in outs] == [4, 1]
    assert calls == [((1, 3), 3), ((1, 30), 33), ((1, 1), 4), ((1, 1), 5), ((1, 1), 6)]
    alone = backend.generate(reqs[:1], SamplingParams(1.0))[0]
    assert alone.token_ids == outs[0].token_ids
    assert torch.allclose(torch.tensor(alone.logprobs), torch.tensor(outs[0].logprobs), atol=1e-6)


def test_cascade_keeps_prefixes_out_of_the_rows_own_caches():
    # with the prompt kept once per group, a prefix is a part of its own: the rows' own caches hold only
    # sampled tokens (mask widths 1, 2, 3 at the decode steps, not 30 + s), for hybrid rows too
    backend = _backend()
    calls = []
    forward = backend._forward
    backend._forward = lambda ids, mask, *a: calls.append((tuple(ids.shape), mask.shape[1])) or forward(ids, mask, *a)
    reqs = [GenerationRequest([5, 6, 7], [], 3, seed=0), GenerationRequest([5, 6, 7], list(range(10, 40)), 3, seed=1)]
    outs = backend.generate(reqs, SamplingParams(1.0))
    assert calls == [((1, 3), 3), ((1, 30), 30), ((2, 1), 1), ((2, 1), 2)]
    for r, o in zip(reqs, outs):
        assert torch.allclose(torch.tensor(o.logprobs), torch.tensor(_reference_logprobs(backend.model, r, o)),
                              atol=1e-5)
