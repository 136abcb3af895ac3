"""Real-data curation on small in-test fixtures: source formats, malformed rows, dedup, decontamination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import ConfigError, DataConfig, DecontamConfig
from pipeline.decontam import EvalIndex, dedup_key, normalise_text
from pipeline.errors import UserError
from pipeline.sources import load_sources
from stages import curate

EVAL_PROBLEMS = {  # suite -> problems (realistic length: the n-gram match needs >= 32 normalised characters)
    "aime24": ["Let $x$, $y$ and $z$ all exceed $1$ and let $w$ be a positive number such that "
               "$\\log_x w = 24$, $\\log_y w = 40$ and $\\log_{xyz} w = 12$. Find $\\log_z w$.",
               "Find the number of ordered pairs $(m,n)$ of positive integers with $m^2 n = 20^{20}$."],
    "math500": ["Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your "
                "answer in the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$",
                "What is the value of $\\dfrac{3}{4} + \\dfrac{5}{8}$ expressed as a common fraction in "
                "lowest terms?"],
}
UNRELATED = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?",
             "Compute $\\dbinom{8}{4}$ and give the result as an integer without any further explanation.",
             "Convert the point $(6,2\\sqrt{3})$ in rectangular coordinates to polar coordinates after "
             "rotating it by a quarter turn about the origin and reflecting it in the line $y = x$."]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _eval_dir(root: Path) -> Path:
    ev = root / "eval"
    ev.mkdir(parents=True)
    _jsonl(ev / "aime24.jsonl", [{"id": i, "problem": p, "answer": "1"} for i, p in enumerate(EVAL_PROBLEMS["aime24"])])
    _jsonl(ev / "math500.jsonl", [{"unique_id": f"t/{i}", "problem": p, "answer": "1"}
                                  for i, p in enumerate(EVAL_PROBLEMS["math500"])])
    return root


def _perturb(text: str) -> str:
    """Light perturbations: case, doubled spaces, \\frac for \\dfrac, spaces inside LaTeX, extra braces."""
    out = text.replace("\\dfrac", "\\frac").replace("$x$", "$ x $").replace("w = 24", "w=24")
    out = out.replace("m^2 n", "m^{2}n").replace("  ", " ").replace(" ", "  ")
    return out.upper() if "log" not in out else out.replace("Find", "find")


def test_normalisation_ignores_case_spacing_and_latex_variants():
    a = "Find $\\dfrac{1}{2} + x^4$,  \\left( y \\right)."
    b = "find $\\frac 1 2+x^{4}$, (y)"
    assert normalise_text(a) == normalise_text(b) == "find\\frac12+x^4(y)"
    assert dedup_key("What is 2 + 3?") != dedup_key("What is 2 + 4?")


def test_perturbed_eval_problems_are_caught_and_unrelated_are_not():
    index = EvalIndex()
    for suite, problems in EVAL_PROBLEMS.items():
        for i, p in enumerate(problems):
            index.add(suite, f"{suite}-{i}", p)
    index.finalise()
    for suite, problems in EVAL_PROBLEMS.items():
        for i, p in enumerate(problems):
            m = index.match(_perturb(p))
            assert m is not None and (m.suite, m.eval_id) == (suite, f"{suite}-{i}") and m.overlap == 1.0, p
            # embedded in a longer training problem (a prefix sentence added): still all its n-grams
            m = index.match("Answer the following question carefully. " + p)
            assert m is not None and m.eval_id == f"{suite}-{i}"
    assert all(index.match(u) is None for u in UNRELATED)


def _sources(tmp_path: Path) -> list[dict[str, str]]:
    math_rows = [{"id": "algebra/1", "problem": "What is $1+1$?", "level": "Level 2",
                  "solution": "We add: $1+1=\\boxed{2}$."},
                 {"id": "algebra/2", "problem": "WHAT  is $1 + 1$?", "level": "Level 2",  # near-duplicate of 1
                  "solution": "It is $\\boxed{2}$."},
                 {"id": "algebra/3", "problem": "What is $2+2$?", "level": "Level 1",
                  "solution": "So the answer is $\\boxed{5}$."},  # demonstration disagrees with... itself: kept
                 {"id": "geo/4", "problem": _perturb(EVAL_PROBLEMS["math500"][0]), "level": "Level 3",
                  "solution": "The answer is $\\boxed{(3,\\frac{\\pi}{2})}$."},  # contaminated
                 {"id": "geo/5", "problem": "Find $x$.", "level": "Level 1", "solution": "No boxed answer."},
                 {"id": "geo/6", "problem": 7, "level": "Level 1", "solution": "$\\boxed{1}$"}]
    gsm_rows = [{"question": UNRELATED[0], "answer": "48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72"},
                {"question": "How many apples?", "answer": "no final line"},
                "{not json"]
    aime_rows = [{"problem": "Compute $3\\cdot 4$.", "solution": "It is $\\boxed{12}$.", "answer": "12"},
                 {"problem": "Compute $3\\cdot 5$.", "solution": "It is $\\boxed{16}$.", "answer": "15"},
                 {"problem": EVAL_PROBLEMS["aime24"][1], "solution": "$\\boxed{231}$", "answer": 231},
                 {"problem": "Compute $6 \\cdot 7$.", "solution": "", "answer": "42"},
                 {"problem": "Compute $6 \\cdot 8$.", "solution": "It is $\\boxed{48}$.", "answer": "$$"}]  # unparsable
    return [{"path": str(_jsonl(tmp_path / "math_train.jsonl", math_rows)), "format": "math"},
            {"path": str(_jsonl(tmp_path / "gsm8k_train.jsonl", gsm_rows)), "format": "gsm8k"},
            {"path": str(_jsonl(tmp_path / "aime.jsonl", aime_rows)), "format": "aime", "name": "aime"}]


def test_loaders_normalise_each_format_and_count_malformed_rows(tmp_path):
    ds, report = load_sources(_sources(tmp_path))
    # math: 6 rows; geo/5 has no \boxed (missing_answer), geo/6 a non-string problem -> 4 kept
    assert report["math_train"] == {"rows_read": 6, "dropped_missing_answer": 1, "dropped_non_string_field": 1,
                                    "rows_kept": 4}
    # gsm8k: 3 rows; one without `####` (missing_answer), one unparsable line (malformed_row) -> 1 kept
    assert report["gsm8k_train"] == {"rows_read": 3, "dropped_missing_answer": 1, "dropped_malformed_row": 1,
                                     "rows_kept": 1}
    # aime: 5 rows; the empty solution -> 4 kept (the unparsable answer is the verifier's to count)
    assert report["aime"] == {"rows_read": 5, "dropped_empty_demonstration": 1, "rows_kept": 4}
    rows = ds.to_list()
    assert [r["id"] for r in rows[:2]] == ["math_train-algebra/1", "math_train-algebra/2"]
    assert rows[0]["answer"] == "2" and rows[0]["level"] == 2
    gsm = next(r for r in rows if r["source"] == "gsm8k_train")
    assert gsm["answer"] == "72" and "<<" not in gsm["demonstration"]
    assert gsm["demonstration"].endswith("The final answer is $\\boxed{72}$.")
    assert next(r for r in rows if r["id"] == "aime-2")["answer"] == "231"


def test_curate_dedups_decontaminates_verifies_and_reports(tmp_path, micro_tokenizer):
    decontam = DecontamConfig(suites=["aime24", "math500"], data_dir=str(_eval_dir(tmp_path / "ev")))
    cfg = DataConfig(source="files", sources=_sources(tmp_path), decontam=decontam, max_prompt_tokens=100_000,
                     max_demo_tokens=100_000)
    report: dict = {}
    ds = curate.run(curate.load_source(cfg, report), cfg, tokenizer=micro_tokenizer, report=report)
    # 9 rows in; algebra/2 duplicates algebra/1; geo/4 (math500) and aime-2 (aime24) contaminated;
    # aime-1 (boxed 16 vs answer 15) mismatched; aime-4's answer "$$" does not parse
    # -> 9 - 1 - 2 - 1 - 1 = 4 out (algebra/3's boxed 5 is its own reference)
    assert report["rows_in"] == 9 and report["dropped_duplicate"] == 1
    assert report["dropped_contaminated"] == 2 and report["dropped_demo_mismatch"] == 1
    assert report["dropped_unparsable_answer"] == 1
    assert report["rows_out"] == len(ds) == 4
    assert sorted((m["id"], m["suite"]) for m in report["contaminated"]) == [
        ("aime-2", "aime24"), ("math_train-geo/4", "math500")]
    assert report["contaminated"][0]["eval_id"] in ("aime24-1", "math500-t/0")
    assert set(report["prompt_tokens"]) == {"p50", "p90", "p99", "max"}
    assert all(ds["demo_verified"])
    table = curate.report_table(report)
    assert "| dropped_contaminated | 2 |" in table and "| **rows out** | **4** |" in table

    half = DataConfig(**{**cfg.__dict__, "prompt_fraction": 0.5})
    report2: dict = {}
    assert len(curate.run(curate.load_source(half, report2), half, tokenizer=micro_tokenizer, report=report2)) == 2
    assert report2["dropped_prompt_fraction"] == 2  # round(0.5 * 4) = 2 kept


def test_reference_filters_keep_every_row_and_count_what_each_filter_would_drop(tmp_path, micro_tokenizer):
    decontam = DecontamConfig(suites=["aime24", "math500"], data_dir=str(_eval_dir(tmp_path / "ev")))
    cfg = DataConfig(source="files", sources=_sources(tmp_path), decontam=decontam, max_prompt_tokens=100_000,
                     max_demo_tokens=100_000, filters="reference")
    report: dict = {}
    ds = curate.run(curate.load_source(cfg, report), cfg, tokenizer=micro_tokenizer, report=report)
    # the same 9 rows as above: nothing dropped; the counts of the default filters are reported
    assert report["rows_out"] == len(ds) == 9
    assert report["reference_would_drop_duplicate"] == 1 and report["reference_would_drop_contaminated"] == 2
    assert report["reference_would_drop_demo_mismatch"] == 1 and report["reference_would_drop_unparsable_answer"] == 1
    assert sum(not v for v in ds["demo_verified"]) == 2


def test_weight_samples_a_fraction_of_a_source(tmp_path):
    rows = [{"problem": f"Problem {i}?", "solution": f"$\\boxed{{{i}}}$", "answer": str(i)} for i in range(10)]
    spec = {"path": str(_jsonl(tmp_path / "a.jsonl", rows)), "format": "aime", "weight": "0.3"}
    ds, report = load_sources([spec], seed=1)
    assert len(ds) == 3 and report["a"]["dropped_by_weight"] == 7  # round(0.3 * 10) = 3
    assert load_sources([spec], seed=1)[0]["id"] == ds["id"]  # seeded


def test_column_mapping_and_bad_sources_fail_with_one_line(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"q": "What is 2+3?", "r": {"text": "So $\\boxed{5}$."}}])
    ds, _ = load_sources([{"path": str(path), "format": "columns", "problem": "q", "demonstration": "r.text"}])
    assert ds[0]["answer"] == "5"  # no answer column mapped: the demonstration's last \boxed{}
    with pytest.raises(UserError, match="no such file"):
        load_sources([{"path": str(tmp_path / "missing.jsonl"), "format": "math"}])
    with pytest.raises(UserError, match=r"c\.jsonl.*problem='problem'.*demonstration='solution'"):
        load_sources([{"path": str(path), "format": "math"}])
    with pytest.raises(ConfigError, match="unknown format"):
        load_sources([{"path": str(path), "format": "csv"}])
    with pytest.raises(ConfigError, match="weight"):
        load_sources([{"path": str(path), "format": "math", "weight": "2"}])
    with pytest.raises(ConfigError, match="data.sources"):
        DataConfig(source="files")


def test_openr1_parquet_in_luffy_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    instruction = "Please reason step by step, and put your final answer within \\boxed{}."
    user = {"role": "user", "content": f"What is 6*7?\n{instruction}"}
    rows = [{"prompt": [{"role": "system", "content": "sys"}, user],
             "target": [{"role": "assistant", "content": "<think>6*7=42</think>\nSo $\\boxed{42}$."}],
             "reward_model": {"ground_truth": "42", "style": "rule"}},
            {"prompt": [{"role": "system", "content": "sys"}], "target": [{"role": "assistant", "content": "x"}],
             "reward_model": {"ground_truth": "1", "style": "rule"}}]  # no user turn
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "openr1.parquet")
    ds, report = load_sources([{"path": str(tmp_path / "openr1.parquet"), "format": "openr1"}])
    assert report["openr1"] == {"rows_read": 2, "dropped_missing_problem": 1, "rows_kept": 1}
    assert ds[0]["problem"] == "What is 6*7?" and ds[0]["answer"] == "42"
    assert ds[0]["demonstration"].startswith("<think>")


def test_demo_fraction_keeps_prompts_and_prefixes_gives_them_no_hybrid(tmp_path, micro_tokenizer):
    from pipeline.config import PrefixConfig
    from stages import prefixes

    rows = [{"problem": f"Compute {i} plus {i}.", "solution": f"It is $\\boxed{{{2 * i}}}$.", "answer": str(2 * i)}
            for i in range(1, 9)]
    cfg = DataConfig(source="files", sources=[{"path": str(_jsonl(tmp_path / "d.jsonl", rows)), "format": "aime"}],
                     decontam=DecontamConfig(suites=[]), demo_fraction=0.25)
    report: dict = {}
    ds = curate.run(curate.load_source(cfg, report), cfg, tokenizer=micro_tokenizer, report=report)
    # 8 prompts kept; round(0.25 * 8) = 2 keep their demonstration, 6 do not
    assert len(ds) == 8 and report["prompts_without_demo"] == 6
    assert sum(len(d) > 0 for d in ds["demo_ids"]) == 2 and sum(ds["demo_verified"]) == 2
    out = prefixes.run(ds, PrefixConfig(prompts_per_step=8, samples_per_prompt=4, hybrids_per_prompt=1), step=1,
                       seed=0, horizon=10, max_response_tokens=64)
    with_demo = {i for i, d in zip(ds["id"], ds["demo_ids"]) if d}
    hybrid_ids = {i for i, h in zip(out["id"], out["is_hybrid"]) if h}
    assert hybrid_ids == with_demo  # one hybrid per prompt with a demonstration, none for the others


def test_input_fingerprint_changes_when_a_source_file_changes(tmp_path):
    path = _jsonl(tmp_path / "a.jsonl", [{"problem": "p", "solution": "$\\boxed{1}$", "answer": "1"}])
    cfg = DataConfig(source="files", sources=[{"path": str(path), "format": "aime"}],
                     decontam=DecontamConfig(suites=[]))
    before = curate.input_fingerprint(cfg)
    assert before == curate.input_fingerprint(cfg) and curate.input_fingerprint(DataConfig()) == []
    _jsonl(path, [{"problem": "p", "solution": "$\\boxed{2}$", "answer": "2"}, {"problem": "q"}])
    assert curate.input_fingerprint(cfg) != before  # size differs
