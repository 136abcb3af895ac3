"""Weight streaming to an engine (pipeline.backends.weights) and strict loading of gathered weights."""

from __future__ import annotations

import pytest
import torch

from pipeline.backends.weights import buckets, full_tensors
from pipeline.errors import UserError
from tests.conftest import tiny_qwen2


def test_stream_casts_to_engine_dtype_and_keeps_one_bucket_alive():
    model = tiny_qwen2(vocab_size=40)  # tied head: lm_head.weight is not pushed
    want = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    seen, alive = {}, []
    stream = full_tensors(model, torch.bfloat16)
    sizes = [n * 2 for n in (v.numel() for v in want.values())]
    limit = max(sizes) * 2  # at least two tensors per bucket for the small ones
    for bucket in buckets(stream, limit):
        assert sum(t.numel() * t.element_size() for _, t in bucket) <= limit or len(bucket) == 1
        for name, t in bucket:
            assert t.dtype == torch.bfloat16
            seen[name] = t.clone()
        alive.append(bucket)
    assert list(seen) == list(want) and all(torch.equal(seen[k], want[k]) for k in want)
    assert len(alive) > 1 and all(len(b) == 0 for b in alive)  # each bucket was emptied before the next
    # plain iteration: the same tensors, one at a time; without a dtype, the module's own
    assert [n for n, _ in full_tensors(model)] == list(want)
    assert next(iter(full_tensors(model)))[1].dtype == torch.float32


def test_engine_dtype_recorded_on_the_module():
    from pipeline.config import GenerateConfig, SGLangConfig
    from pipeline.distributed import engine_weights

    model = tiny_qwen2(vocab_size=40)
    src = engine_weights(GenerateConfig(backend="sglang", precision="bf16"), model, accelerator=None)
    assert src is model  # no copy: the stream reads the trainer's module
    assert {t.dtype for _, t in full_tensors(src)} == {torch.bfloat16}
    engine_weights(GenerateConfig(backend="sglang", precision="bf16",
                                  sglang=SGLangConfig(engine_args={"dtype": "float32"})), model, None)
    assert {t.dtype for _, t in full_tensors(model)} == {torch.float32}


def test_mismatched_keys_are_one_line_errors_not_random_weights():
    """Defect 10: a state whose names do not match the model used to load with strict=False, silently
    keeping random weights; now it is an error naming the keys."""
    from pipeline.distributed import check_keys

    model = tiny_qwen2(vocab_size=40)
    names = list(model.state_dict())
    check_keys(model, names, "src")  # exact: fine
    check_keys(model, [n for n in names if n != "lm_head.weight"], "src")  # tied head may be absent
    renamed = ["module." + n if "layers.0." in n else n for n in names]
    with pytest.raises(UserError) as e:
        check_keys(model, renamed, "the FSDP2 policy's state")
    msg = str(e.value)
    assert "\n" not in msg and "missing keys ['model.layers.0." in msg and "unexpected keys ['module.model.layers.0." in msg
