"""The embedded default: deterministic offline build, a tokenizer AutoTokenizer reloads exactly, and a
chat template with no system turn."""

import json

import pytest
import torch

from pipeline.embedded.build import PRESETS, build, build_tokenizer, ensure_embedded
from pipeline.prompts import build_messages, render_prompt_ids

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def test_rendered_prompt_snapshot(micro_tokenizer):
    ids = render_prompt_ids(micro_tokenizer, build_messages("What is 3 + 4 - 2?", INSTRUCTION))
    text = micro_tokenizer.decode(ids)
    assert text == ("<|im_start|>user\nWhat is 3 + 4 - 2?\nPlease reason step by step, and put your final answer "
                    "within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    assert "system" not in text


def test_autotokenizer_reloads_the_built_tokenizer_exactly(micro_tokenizer):
    fresh = build_tokenizer(0, PRESETS["micro"].vocab_size)
    samples = ["7 + 5 = 12. 12 - 3 = 9. The answer is \\boxed{9}.", "héllo 日本 🙂 \\frac{1}{2}", "<think>x</think>"]
    for s in samples:
        assert fresh(s, add_special_tokens=False)["input_ids"] == micro_tokenizer(s, add_special_tokens=False)["input_ids"]
        assert micro_tokenizer.decode(micro_tokenizer(s, add_special_tokens=False)["input_ids"]) == s
    assert type(micro_tokenizer).__name__ == "Qwen2Tokenizer"
    assert micro_tokenizer.eos_token == "<|im_end|>" and micro_tokenizer.pad_token == "<|endoftext|>"


def test_digits_are_single_tokens(micro_tokenizer):
    toks = micro_tokenizer.convert_ids_to_tokens(micro_tokenizer("12 + 345", add_special_tokens=False)["input_ids"])
    assert [t for t in toks if t.strip("Ġ").isdigit()] == ["1", "2", "3", "4", "5"]


def test_build_is_deterministic_and_cached(micro_path, tmp_path, monkeypatch):
    again = tmp_path / "again"
    build(PRESETS["micro"], again, "micro")
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (again / name).read_bytes() == (micro_path / name).read_bytes(), name
    report = json.loads((micro_path / "embedded_report.json").read_text())
    assert set(report["pass_at_1_by_level"]) == {f"level_{i}" for i in range(1, 7)}
    assert ensure_embedded("micro") == micro_path  # a second call loads the cache


def test_countdown_build_reports_how_often_its_arithmetic_is_wrong(micro_path, tmp_path):
    import dataclasses

    build(dataclasses.replace(PRESETS["micro"], task="countdown"), tmp_path / "cd", "countdown")
    report = json.loads((tmp_path / "cd" / "embedded_report.json").read_text())
    levels = {f"level_{i}" for i in range(1, 6)}
    assert set(report["pass_at_1_by_level"]) == levels == set(report["wrong_line_rate_by_level"])
    # a 30-step micro policy writes no worked line at all: the rate is undefined, not 0
    assert set(report["wrong_line_rate_by_level"].values()) == {None}
    assert "wrong_line_rate_by_level" not in json.loads((micro_path / "embedded_report.json").read_text())


def test_a_warm_start_variant_is_built_and_cached_apart(micro_path, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFIX_RFT_CACHE", str(tmp_path))
    variant = ensure_embedded("micro", sft_steps=5)
    assert variant.parent == tmp_path / "embedded" and variant.name != micro_path.name
    assert json.loads((variant / "embedded_report.json").read_text())["spec"]["sft_steps"] == 5
    assert (variant / "model.safetensors").read_bytes() != (micro_path / "model.safetensors").read_bytes()
    assert ensure_embedded("micro", sft_steps=5) == variant


def test_model_is_a_real_qwen2(micro_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_path)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.model_type == "qwen2"
    assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_unknown_preset_is_a_clear_error():
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="unknown embedded preset 'huge'"):
        ensure_embedded("huge")
