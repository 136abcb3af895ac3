"""`prefix-rft plan`: per-GPU memory against hand-computed figures (model shapes are the published
config.json values of Qwen2.5-Math-7B and -1.5B, kept in pipeline.memplan.KNOWN_SHAPES)."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.memplan import check_fits, main, model_shape, plan

GIB = 2 ** 30


def test_parameter_counts_from_the_published_shapes():
    # 7B: per layer q 3584*3584+3584 = 12,848,640; k, v 3584*512+512 = 1,835,520 each; o 12,845,056;
    # MLP 3*3584*18944 = 203,685,888; norms 2*3584 = 7,168 -> 233,057,792; x28 = 6,525,618,176;
    # embed + untied head 2*152064*3584 = 1,089,994,752; final norm 3584 -> 7,615,616,512
    s7 = model_shape("Qwen/Qwen2.5-Math-7B")
    assert s7.layer_params() == 233_057_792 and s7.params() == 7_615_616_512
    # 1.5B: q 1536*1536+1536 = 2,360,832; k, v 1536*256+256 = 393,472 each; o 2,359,296;
    # MLP 3*1536*8960 = 41,287,680; norms 3,072 -> 46,797,824; x28 = 1,310,339,072; tied embed
    # 151936*1536 = 233,373,696; final norm 1536 -> 1,543,714,304
    assert model_shape("Qwen/Qwen2.5-Math-1.5B").params() == 1_543_714_304


def test_qwen25_math_7b_on_8x80gb_with_sglang():
    p = plan(load_config("qwen2.5-math-7b", ["generate.backend=sglang"]), gpus=8, gpu_memory_gib=80)
    g = p["per_gpu_gib"]
    assert p["micro_batch_tokens"] == 4 * (1024 + 8192)  # micro_batch_size 4 x (prompt + response) = 36,864
    assert g["parameters (fp32 shards)"] == 3.55  # 7,615,616,512 * 4 / 8 = 3,807,808,256 B = 3.546 GiB
    assert g["gradients (fp32 shards)"] == 3.55
    assert g["optimizer (AdamW, 2 fp32 shards)"] == 7.09  # * 8 / 8 = 7,615,616,512 B = 7.093 GiB
    assert g["gathered layers (bf16, 2 in flight)"] == 0.87  # 2 * 233,057,792 * 2 B = 0.868 GiB
    # checkpointed inputs 36864*3584*2*28 = 7,398,752,256 + one layer 36864*(4*3584+2*512+3*18944)*2
    # = 5,322,571,776 -> 12,721,324,032 B = 11.848 GiB
    assert g["activations"] == 11.85
    assert g["log-prob chunks (3 fp32 chunk x vocab)"] == 1.74  # 3*1024*152064*4 = 1,868,562,432 B
    assert g["engine weights"] == 14.19  # bf16: 7,615,616,512 * 2 = 15,231,233,024 B = 14.185 GiB
    assert g["engine KV cache"] == 25.81  # mem_fraction_static 0.5 * 80 - 14.185
    # update: 3.546 + 3.546 + 7.093 + 0.868 + 11.848 + 1.740 + 2 (reserve) = 30.641
    assert p["update_phase_gib"] == 30.64
    # generate: 3.546 (params) + 7.093 (optimizer) + 40 (engine: 0.5 * 80) + 2 = 52.639
    assert p["generate_phase_gib"] == 52.64 and p["fits"] and p["knob"] is None


def test_qwen25_math_15b_on_1x80gb_with_sglang():
    p = plan(load_config("qwen2.5-math-1.5b", ["generate.backend=sglang"]), gpus=1, gpu_memory_gib=80)
    g = p["per_gpu_gib"]
    assert p["micro_batch_tokens"] == 8 * 9216  # the recipe's micro_batch_size 8 -> 73,728
    assert g["parameters (fp32 shards)"] == 5.75  # 1,543,714,304 * 4 = 6,174,857,216 B = 5.751 GiB
    assert g["optimizer (AdamW, 2 fp32 shards)"] == 11.5  # * 8 = 12,349,714,432 B = 11.502 GiB
    assert g["gathered layers (bf16, 2 in flight)"] == 0  # one GPU: nothing is sharded
    # 73728*1536*2*28 = 6,341,787,648 + 73728*(4*1536+2*256+3*8960)*2 = 4,945,084,416 -> 10.512 GiB
    assert g["activations"] == 10.51
    assert g["engine weights"] == 2.88 and g["engine KV cache"] == 37.12  # 3,087,428,608 B; 40 - 2.875
    assert p["update_phase_gib"] == 37.25  # 5.751 * 2 + 11.502 + 10.512 + 1.739 + 2
    assert p["generate_phase_gib"] == 59.25 and p["fits"]  # 5.751 + 11.502 + 40 + 2


def test_what_does_not_fit_names_the_knob():
    # the 7B recipe's transformers backend with batch_size 256 on 8 GPUs: each rank decodes
    # min(256, 1024 / 8) = 128 sequences of 9216 tokens with a bf16 KV cache of 2 * 28 layers * 512 * 2 B = 57,344 B per token -> 63.0 GiB;
    # generate phase 3.546 + 7.093 + 14.185 (gathered bf16 copy) + 63 + 2 = 89.82 > 80
    p = plan(load_config("qwen2.5-math-7b", ["generate.batch_size=256"]), gpus=8, gpu_memory_gib=80)
    assert p["per_gpu_gib"]["engine KV cache"] == 63.0 and p["generate_phase_gib"] == 89.82
    assert not p["fits"] and p["knob"].startswith("generate.batch_size")
    # 7B on one 80 GB GPU: 16 B per parameter of fp32 state alone is 113.5 GiB
    one = plan(load_config("qwen2.5-math-7b", ["generate.backend=sglang"]), gpus=1, gpu_memory_gib=80)
    assert not one["fits"] and one["knob"].startswith("--num_processes")
    with pytest.raises(UserError) as e:  # what a `train` launch that will not fit stops with
        check_fits(load_config("qwen2.5-math-7b", ["generate.batch_size=256"]), 8, 80)
    # the shipped recipe's batch_size 64: 64 * 9216 * 57,344 B = 31.5 GiB; 3.546 + 7.093 + 14.185 + 31.5 + 2
    shipped = plan(load_config("qwen2.5-math-7b"), gpus=8, gpu_memory_gib=80)
    assert shipped["per_gpu_gib"]["engine KV cache"] == 31.5 and shipped["generate_phase_gib"] == 58.32
    assert shipped["fits"]
    assert "\n" not in str(e.value) and "turn generate.batch_size" in str(e.value)


def test_plan_cli(capsys):
    assert main(["--config", "qwen2.5-math-7b", "--gpus", "8", "--gpu-memory-gib", "80",
                 "generate.backend=sglang"]) == 0
    out = capsys.readouterr().out
    assert "engine KV cache" in out and "25.81 GiB" in out and out.rstrip().endswith("fits")
    assert main(["--config", "qwen2.5-math-7b", "--gpus", "8", "--gpu-memory-gib", "80", "generate.batch_size=256"]) == 1
    assert "does not fit: turn generate.batch_size" in capsys.readouterr().out
