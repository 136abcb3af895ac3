"""Evaluation: the oracle scores 100% (the grading path end to end), summaries and outputs."""

import json

import numpy as np
import pytest

from evaluation.run import evaluate, main, subset, summarise
from evaluation.suites import EvalItem, resolve_suites
from pipeline.config import EvalConfig
from pipeline.errors import UserError


def test_oracle_scores_everything_on_toy(tmp_path):
    assert main(["--model", "oracle", "--suites", "toy", "--output-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())["suites"]["toy"]
    assert summary["accuracy"] == 1.0 and summary["problems"] > 500
    assert set(summary["accuracy_by_level"]) == {"1", "2", "3", "4", "5", "6"}
    assert (tmp_path / "results.md").read_text().startswith("| suite |")


def test_summary_statistics_hand_values():
    # 3 problems x 2 samples: per-problem means [1, 0.5, 0] -> accuracy 0.5,
    # std (ddof 1) = 0.5 -> stderr 0.5 / sqrt(3)
    s = summarise(np.array([[1, 1], [1, 0], [0, 0]], dtype=float), [1, 2, 2])
    assert s["accuracy"] == pytest.approx(0.5) and s["stderr"] == pytest.approx(0.5 / np.sqrt(3))
    assert s["accuracy_by_level"] == {"1": 1.0, "2": 0.25}


def test_subset_is_evenly_spaced():
    items = [EvalItem(str(i), "", "", i // 10) for i in range(60)]
    picked = subset(items, 6)
    assert [it.id for it in picked] == ["0", "10", "20", "30", "40", "50"]
    assert subset(items, 0) == items


def test_unknown_suite():
    with pytest.raises(UserError, match="unknown suite 'aime2024'"):
        resolve_suites(["aime2024"])


def test_evaluate_a_model_is_cached(micro_path, micro_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from pipeline.backends.hf import TransformersBackend
    from pipeline.prompts import stop_token_ids

    model = AutoModelForCausalLM.from_pretrained(micro_path)
    backend = TransformersBackend(model, pad_token_id=micro_tokenizer.pad_token_id)
    cfg = EvalConfig(max_problems=12, max_new_tokens=16, samples_per_problem=2)
    suites = resolve_suites(["toy"])
    first = evaluate(backend, micro_tokenizer, suites, cfg, tmp_path, stop_ids=stop_token_ids(micro_tokenizer),
                     policy_fp="m")
    stamp = (tmp_path / "toy" / "_COMPLETE").read_text()
    again = evaluate(backend, micro_tokenizer, suites, cfg, tmp_path, stop_ids=[], policy_fp="m")
    assert again == first and (tmp_path / "toy" / "_COMPLETE").read_text() == stamp
    from datasets import load_from_disk

    samples = load_from_disk(str(tmp_path / "toy" / "data"))
    assert len(samples) == 24 and set(samples.column_names) >= {"problem_id", "completion", "correct"}
