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
    # prefixes, shared prompts and rows that stop early (rows dropped from the buffer mid-rollout)
    from transformers import DynamicCache

    from pipeline.backends import hf

    reqs = [GenerationRequest([3 + i % 3, 4, 5, 6][: 2 + i % 3], [7, 8][: i % 3], 10, seed=i) for i in range(12)]
    sampling = SamplingParams(1.0, stop_token_ids=[9, 10, 11])
    backend = _backend()
    ours = backend.generate(reqs, sampling)
    monkeypatch.setattr(hf, "_preallocated_cache", lambda config, capacity: DynamicCache(config=config))
    ref = backend.generate(reqs, sampling)
    assert len({len(o.token_ids) for o in ref}) > 2  # some rows stopped early
    assert [o.token_ids for o in ours] == [o.token_ids for o in ref]
    assert [o.logprobs for o in ours] == [o.logprobs for o in ref]
    assert [o.finish_reason for o in ours] == [o.finish_reason for o in ref]


def test_preallocated_cache_refuses_to_overflow():
    from pipeline.backends import hf

    model = tiny_qwen2(vocab_size=40)
    cache = hf._preallocated_cache(model.config, capacity=4)
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]), past_key_values=cache, use_cache=True)
        assert cache.get_seq_length() == 3
        model(input_ids=torch.tensor([[4]]), past_key_values=cache, use_cache=True)
        with pytest.raises(RuntimeError, match="rollout cache overflow: 5 > 4"):
            model(input_ids=torch.tensor([[5]]), past_key_values=cache, use_cache=True)
