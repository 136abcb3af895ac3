"""Chat templates, system turns and stop tokens of the two real-model families, on offline tokenizers whose
special tokens, templates and eos ids are the published ones (tests/fixtures/published_tokenizers.py)."""

import json

import pytest
from transformers import GenerationConfig, Qwen2Config

from pipeline.prompts import build_messages, end_of_turn_ids, render_prompt_ids, stop_token_ids
from tests.fixtures.published_tokenizers import (LLAMA31_GENERATION_EOS, QWEN_MATH_CONFIG_EOS,
                                                 QWEN_MATH_DEFAULT_SYSTEM, llama31_tokenizer, qwen_math_tokenizer)

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}"


def test_qwen_math_template_inserts_its_default_system_turn():
    tok = qwen_math_tokenizer()
    text = tok.decode(render_prompt_ids(tok, build_messages("What is 2+3?", INSTRUCTION)))
    assert text == ("<|im_start|>system\n" + QWEN_MATH_DEFAULT_SYSTEM + "<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+3?\n" + INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n")
    # a configured system prompt replaces the default
    text = tok.decode(render_prompt_ids(tok, build_messages("Q", None, "Be brief.")))
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and QWEN_MATH_DEFAULT_SYSTEM not in text


def test_llama31_template_always_opens_with_a_system_header():
    tok = llama31_tokenizer()
    text = tok.decode(render_prompt_ids(tok, build_messages("What is 2+3?", INSTRUCTION)))
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                    "December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>"
                    "\n\nWhat is 2+3?\n" + INSTRUCTION + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


# generation_config.json of Qwen2.5-Math-7B could not be read offline: a single 151643 and [151645, 151643] both
# fit its published size. Either way rollouts must stop at both ids, as Qwen's own evaluation harness does
# (QwenLM/Qwen2.5-Math evaluation/math_eval.py: stop_token_ids [151645, 151643] for every qwen2 model).
@pytest.mark.parametrize("generation_eos", [QWEN_MATH_CONFIG_EOS, [151645, 151643]])
@pytest.mark.parametrize("eos", ["<|endoftext|>", "<|im_end|>"])
def test_qwen_math_rollouts_stop_at_im_end_although_the_configs_name_only_endoftext(eos, generation_eos, tmp_path):
    tok = qwen_math_tokenizer(eos, tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": generation_eos}))
    assert end_of_turn_ids(tok)[0] == 151645
    assert stop_token_ids(tok) == [151643, 151645]  # generation_config.json read from the tokenizer's folder
    config = Qwen2Config(eos_token_id=QWEN_MATH_CONFIG_EOS)
    assert stop_token_ids(tok, config) == [151643, 151645]


def test_llama31_stop_ids_include_generation_config_eos_ids(tmp_path):
    tok = llama31_tokenizer(tmp_path)
    assert stop_token_ids(tok, None) == [128009]  # tokenizer eos = the template's end of turn
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": LLAMA31_GENERATION_EOS}))
    assert stop_token_ids(tok) == [128001, 128008, 128009]

    class Model:  # what transformers' from_pretrained gives: config.json and generation_config.json
        config = type("C", (), {"eos_token_id": 128001})()
        generation_config = GenerationConfig(eos_token_id=LLAMA31_GENERATION_EOS)

    assert stop_token_ids(llama31_tokenizer(), Model()) == [128001, 128008, 128009]
    assert end_of_turn_ids(tok) == [128009]
