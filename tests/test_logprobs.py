"""Chunked log-probs and entropies: equal to the naive full-logits computation, values and gradients."""

import pytest
import torch

from pipeline.logprobs import sequence_logprobs, token_logprobs_entropy
from tests.conftest import tiny_qwen2


def _naive(hidden, weight, targets, temperature):
    logits = (hidden @ weight.T).float() / temperature
    logp = torch.log_softmax(logits, -1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("chunk", [1, 7, 64, 0])
def test_chunked_values_and_gradients_match_naive(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    targets = torch.randint(0, 40, (50,))
    w = torch.randn(50)
    lp, ent = token_logprobs_entropy(hidden, weight, None, targets, 0.7, chunk)
    (lp * w + 0.3 * ent).sum().backward()
    g_h, g_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    lp2, ent2 = _naive(hidden, weight, targets, 0.7)
    (lp2 * w + 0.3 * ent2).sum().backward()
    assert torch.allclose(lp, lp2, atol=1e-5) and torch.allclose(ent, ent2, atol=1e-5)
    assert torch.allclose(g_h, hidden.grad, atol=1e-5) and torch.allclose(g_w, weight.grad, atol=1e-5)


def test_sequence_logprobs_match_model_logits():
    model = tiny_qwen2(vocab_size=50)
    ids = torch.randint(0, 50, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    score = torch.zeros_like(ids, dtype=torch.bool)
    score[:, 3:8] = True
    lp, ent = sequence_logprobs(model, ids, mask, score, temperature=1.0, chunk_tokens=4)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    ref = torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(lp[:, 3:8], ref[:, 3:8], atol=1e-5)
    assert (lp[~score] == 0).all() and (ent[~score] == 0).all()
    # the model's own head is restored afterwards
    assert model(input_ids=ids).logits.shape == (3, 12, 50)


def test_sequence_logprobs_gradient_reaches_the_model():
    model = tiny_qwen2(vocab_size=50).train()
    ids = torch.randint(0, 50, (2, 10))
    score = torch.zeros_like(ids, dtype=torch.bool)
    score[:, 2:9] = True
    lp, ent = sequence_logprobs(model, ids, torch.ones_like(ids), score, chunk_tokens=3)
    (lp.sum() + ent.sum()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_right_padded_batches_drop_the_padding_mask_and_score_the_same():
    # a right-padded batch is forwarded with causal attention alone (no [B, 1, T, T] mask): the scored
    # values equal a masked forward of each row alone; a batch padded on the left keeps its mask
    torch.manual_seed(0)
    model = tiny_qwen2(vocab_size=50)
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True)
    ids = torch.randint(1, 50, (3, 14))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    mask[2, 6:] = 0
    score = mask.bool().clone()
    score[:, :2] = False
    score[torch.arange(3), mask.sum(-1) - 1] = False  # the last real token scores nothing
    lp, _ = sequence_logprobs(model, ids, mask, score, chunk_tokens=5)
    assert seen[-1] is None
    for r in range(3):
        n = int(mask[r].sum())
        with torch.no_grad():
            ref = torch.log_softmax(model(input_ids=ids[r:r + 1, :n]).logits.float(), -1)[0, :-1]
        ref = ref.gather(-1, ids[r, 1:n, None]).squeeze(-1)
        assert torch.allclose(lp[r, :n - 1][score[r, :n - 1]], ref[score[r, :n - 1]], atol=1e-5)
    left = mask.flip(-1)  # padded on the left: the mask must reach the model
    sequence_logprobs(model, ids, left, left.bool(), chunk_tokens=5)
    assert seen[-1] is not None and torch.equal(seen[-1], left)
