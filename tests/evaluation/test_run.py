"""Evaluation end to end: the oracle scores 100% on every suite (the grading path), protocols, chunked
generation that resumes, the outputs (Arrow samples, summary, table, plots), several checkpoints."""

import json

import pytest
from datasets import load_from_disk

from evaluation.run import evaluate, expand_models, main, samples_for, subset
from evaluation.suites import SUITES, EvalItem, resolve_suites
from pipeline.config import EvalConfig

ALL_TEN = "math,general,toy"


def _suites(path):
    return json.loads((path / "summary.json").read_text())["suites"]


def test_oracle_scores_everything_on_every_suite(suites_dir, tmp_path):
    out = tmp_path / "oracle"
    assert main(["--model", "oracle", "--suites", ALL_TEN, "--data-dir", str(suites_dir),
                 "--output-dir", str(out)]) == 0
    suites = _suites(out)
    assert set(suites) == set(SUITES) - {"amc23", "toy_val", "countdown", "countdown_val"}
    assert all(s["accuracy"] == 1.0 for s in suites.values()), {n: s["accuracy"] for n, s in suites.items()}
    # the default protocol: avg@32 on AIME24/AIME25/AMC, one sample elsewhere; pass@k up to 32
    assert suites["aime24"]["samples_per_problem"] == 32 and suites["math500"]["samples_per_problem"] == 1
    assert list(suites["amc"]["pass_at_k"]) == ["1", "2", "4", "8", "16", "32"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["macro"]["math"]["accuracy"] == 1.0 and len(summary["macro"]["math"]["suites"]) == 6
    table = (out / "results.md").read_text()
    assert "**math macro average**" in table and "| gpqa_diamond | avg@1 | 100.0 |" in table
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "pass_at_k.png").stat().st_size > 1000
    samples = load_from_disk(str(out / "arc_c" / "data"))
    assert samples["extracted_answer"] == ["B", "C"] and all(samples["correct"])
    assert set(samples.column_names) >= {"problem_id", "completion", "extracted_answer", "reference", "correct"}


def test_oracle_under_the_luffy_protocol(suites_dir, tmp_path):
    assert main(["--model", "oracle", "--suites", "aime24,amc,math500", "--data-dir", str(suites_dir),
                 "--output-dir", str(tmp_path), "eval.protocol=luffy"]) == 0
    suites = _suites(tmp_path)
    assert suites["aime24"]["problems"] == 1 and suites["aime24"]["samples_per_problem"] == 3  # the x3 replicas
    assert all(s["accuracy"] == 1.0 for s in suites.values())


def test_samples_override_and_subset():
    item = EvalItem("a", "p", "1")
    assert samples_for(SUITES["aime24"], item, EvalConfig()) == 32
    assert samples_for(SUITES["math500"], item, EvalConfig()) == 1
    assert samples_for(SUITES["aime24"], item, EvalConfig(samples_per_problem=4)) == 4
    items = [EvalItem(str(i), "", "", i // 10) for i in range(60)]
    assert [it.id for it in subset(items, 6)] == ["0", "10", "20", "30", "40", "50"] and subset(items, 0) == items


def test_bad_override_is_one_line(tmp_path, capsys):
    assert main(["--model", "oracle", "--suites", "toy", "--output-dir", str(tmp_path), "eval.protocl=paper"]) == 2
    assert "did you mean 'protocol'" in capsys.readouterr().err


class CountingBackend:
    """The real transformers backend, counting requests; optionally failing after `fail_after` calls."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.calls, self.requests, self.fail_after = inner, 0, 0, fail_after

    def generate(self, requests, sampling):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.requests += len(requests)
        return self.inner.generate(requests, sampling)


def test_chunked_generation_resumes_and_matches_one_chunk(micro_path, micro_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from pipeline.backends.hf import TransformersBackend
    from pipeline.prompts import stop_token_ids

    model = AutoModelForCausalLM.from_pretrained(micro_path)
    inner = TransformersBackend(model, pad_token_id=micro_tokenizer.pad_token_id)
    stop = stop_token_ids(micro_tokenizer)
    suites = resolve_suites(["toy"])
    chunked = EvalConfig(max_problems=4, max_new_tokens=12, samples_per_problem=2, chunk_size=3)  # 8 = 3+3+2
    crashing = CountingBackend(inner, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate(crashing, micro_tokenizer, suites, chunked, tmp_path / "a", stop_ids=stop, policy_fp="m")
    assert len(list((tmp_path / "a" / ".toy.chunks").glob("chunk-*"))) == 2
    resumed = CountingBackend(inner)
    first = evaluate(resumed, micro_tokenizer, suites, chunked, tmp_path / "a", stop_ids=stop, policy_fp="m")
    assert resumed.requests == 2 and not (tmp_path / "a" / ".toy.chunks").exists()  # only the last chunk
    whole = evaluate(inner, micro_tokenizer, suites, EvalConfig(max_problems=4, max_new_tokens=12,
                     samples_per_problem=2), tmp_path / "b", stop_ids=stop, policy_fp="m")
    a = load_from_disk(str(tmp_path / "a" / "toy" / "data")).to_dict()
    b = load_from_disk(str(tmp_path / "b" / "toy" / "data")).to_dict()
    assert a == b and first["toy"]["accuracy"] == whole["toy"]["accuracy"] and len(a["completion"]) == 8
    again = CountingBackend(inner)  # a complete suite folder is reused: no generation at all
    evaluate(again, micro_tokenizer, suites, chunked, tmp_path / "a", stop_ids=stop, policy_fp="m")
    assert again.calls == 0


def test_several_checkpoints(tmp_path, suites_dir):
    run = tmp_path / "run"
    for step in (10, 2):
        (run / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
    assert [n for n, _ in expand_models(str(run))] == ["step-000002", "step-000010"]
    assert expand_models("a/b,oracle") == [("b", "a/b"), ("oracle", "oracle")]
    from evaluation.report import write_comparison

    res = {"step-000002": {"toy": {"accuracy": 0.2, "stderr": 0.01}},
           "step-000010": {"toy": {"accuracy": 0.4, "stderr": 0.02}}}
    write_comparison(tmp_path, res, EvalConfig())
    assert "| toy | 20.0 | 40.0 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy_over_steps.png").stat().st_size > 1000


def test_metrics_are_evaluate_modules_loadable_offline(monkeypatch):
    import evaluate

    from evaluation import stats

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = stats.__file__.rsplit("/", 1)[0] + "/metrics"
    pk = evaluate.load(f"{root}/pass_at_k").compute(predictions=[[True, False, False, True], [False] * 4])
    # problem 1: c=2 of n=4 -> pass@2 = 1 - C(2,2)/C(4,2) = 5/6; problem 2: 0 -> mean 5/12
    assert pk == pytest.approx({"pass@1": 0.25, "pass@2": 5 / 12, "pass@4": 0.5, "avg@4": 0.25})
    ch = evaluate.load(f"{root}/choice_accuracy").compute(predictions=["\\boxed{B}", "ANSWER: 1", "x"],
                                                          references=["2", "1", "3"], labels=["1", "2", "3", "4"])
    assert ch["accuracy"] == pytest.approx(2 / 3) and ch["no_answer_rate"] == pytest.approx(1 / 3)
    ma = evaluate.load(f"{root}/math_accuracy").compute(predictions=["so \\boxed{\\frac{1}{2}}", "none"],
                                                        references=["0.5", "3"])
    assert ma["accuracy"] == 0.5 and ma["no_answer_rate"] == 0.5


def test_oracle_solves_the_embedded_countdown_suites(tmp_path):
    assert main(["--model", "oracle", "--suites", "countdown,countdown_val,toy_val", "--output-dir", str(tmp_path)]) == 0
    suites = _suites(tmp_path)
    assert suites["countdown"]["problems"] == 431 and suites["countdown_val"]["problems"] == 160
    assert all(s["accuracy"] == 1.0 for s in suites.values()), {n: s["accuracy"] for n, s in suites.items()}
    # the summary's config names the suites evaluated (--suites), not the config default ["toy"]
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["suites"] == [
        "countdown", "countdown_val", "toy_val"]


def test_one_process_evaluates_several_checkpoints_into_their_own_folders(micro_path, tmp_path, capsys):
    """`--output-dir a,b`: one folder per model, in --model's order, no comparison; a checkpoint evaluated beside
    another gives the samples it gives alone (every sample's seed is its own)."""
    small = ["eval.max_problems=6", "eval.max_new_tokens=12", "eval.samples_per_problem=2"]
    assert main(["--model", str(micro_path), "--suites", "toy", "--output-dir", str(tmp_path / "alone"), *small]) == 0
    dirs = [tmp_path / "o", tmp_path / "m"]
    assert main(["--model", f"oracle,{micro_path}", "--suites", "toy", "--output-dir", ",".join(map(str, dirs)),
                 *small]) == 0
    assert _suites(dirs[0])["toy"]["accuracy"] == 1.0
    alone, beside = (load_from_disk(str(d / "toy" / "data")) for d in (tmp_path / "alone", dirs[1]))
    assert beside["completion"] == alone["completion"] and len(alone) == 12
    assert _suites(dirs[1])["toy"]["accuracy"] == _suites(tmp_path / "alone")["toy"]["accuracy"]
    assert not (tmp_path / "results.md").exists() and not (tmp_path / "o" / "oracle").exists()
    capsys.readouterr()
    assert main(["--model", "oracle,negative", "--suites", "toy", "--output-dir", str(tmp_path / "x"), *small]) == 0
    assert (tmp_path / "x" / "results.md").is_file() and (tmp_path / "x" / "negative" / "summary.json").is_file()
    capsys.readouterr()
    assert main(["--model", "oracle,negative", "--suites", "toy", "--output-dir", "a,b,c"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --output-dir: 3 directories for 2 models; give one directory, "
                                               "or one per model in --model's order")
