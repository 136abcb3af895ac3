"""The `paper` and `luffy` protocols against the reference code's behaviour, row by row.

Expected labels are what the references compute for these rows: LUFFY eval_scripts/generate_vllm.py
(`remove_system`, `template='own'`, top_p 1.0, `--add_oat_evaluate True`: the final label is OAT's
`boxed_reward_fn(text, answer, fast=False)[1] == 1.0`, its `<think>` split), Prefix-RFT
recipe/prepare_data/luffy_test.py (instruction appended without a period, system turn commented out) and
its OAT `rfn` on the whole response."""

import pytest

from evaluation.protocols import PAPER_INSTRUCTION, PROTOCOLS, grade_region
from evaluation.run import grade, item_messages, main
from evaluation.suites import SUITES
from pipeline.config import EvalConfig
from pipeline.oat_grader import grade_oat, oat_boxed
from pipeline.prompts import build_messages


def test_paper_protocol_renders_prefix_rft_eval_rows(suites_dir):
    item = SUITES["math500"].load(str(suites_dir), "paper")[0]
    assert item_messages(item, PROTOCOLS["paper"]) == [
        {"role": "user", "content": "Convert the point.\nPlease reason step by step, and put your final answer "
                                    "within \\boxed{}"}]  # luffy_test.py: no system turn, no final period
    assert item.answer == "\\pi"  # valid.all's ground truth, not the hub copy's
    aime = SUITES["aime24"].load(str(suites_dir), "paper")
    assert len(aime) == 1 and aime[0].samples == 3  # valid.all's replicas
    arc = SUITES["arc_c"].load(str(suites_dir), "paper")
    assert arc[0].system_prompt  # luffy_test_ood.py saves the OOD parquets raw
    assert item_messages(SUITES["aime24"].load(str(suites_dir), "luffy")[0], PROTOCOLS["luffy"]) == [
        {"role": "user", "content": "Find 0 + 200."}]
    assert SUITES["arc_c"].load(str(suites_dir), "luffy")[0].system_prompt is None
    assert PROTOCOLS["luffy"].top_p == 1.0 and PROTOCOLS["paper"].top_p == 0.95 and PAPER_INSTRUCTION[-1] == "}"


@pytest.mark.parametrize("response,region", [
    # the prompt ends in <think>\n: grade between the first and second </think>
    ("reasoning \\boxed{3}</think> so \\boxed{5}", " so \\boxed{5}"),
    ("a</think> \\boxed{5} </think> \\boxed{9}", " \\boxed{5} "),
])
def test_luffy_think_split(response, region):
    assert grade_region(response, PROTOCOLS["luffy"], "oat", True) == (region, False)


def test_luffy_without_end_think_math_verify_zero_but_oat_grades_everything():
    text = "no closing tag \\boxed{5}"
    region, zero = grade_region(text, PROTOCOLS["luffy"], "math_verify", True)
    assert zero  # generate_vllm.py: the split raises, labels = [False]
    region, zero = grade_region(text, PROTOCOLS["luffy"], "oat", True)
    assert not zero and region == "<think>\n" + text  # then OAT, the final label, grades the unsplit text
    assert grade_region(text, PROTOCOLS["luffy"], "oat", False) == (text, False)  # prompt without <think>


@pytest.mark.parametrize("response,reference,label", [
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1.0),  # MATH normalisation: dfrac -> frac
    ("\\boxed{0.5}", "\\frac12", 1.0),  # "0.5" -> \frac{1}{2}, \frac12 -> \frac{1}{2}
    ("\\boxed{10 cm}", "10", 1.0),  # unit stripped by the PRM800K normalisation
    ("\\boxed{142}", "142.0", 1.0),  # float that is an integer
    ("\\boxed{(3,\\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),  # tuple, element by element
    ("\\boxed{x=3}", "3", 1.0),  # short left-hand side dropped
    ("\\boxed 5", "5", 0.0),  # the span must read \boxed{...}
    ("\\fbox{5}", "5", 0.0),  # a lone \fbox is found but not unwrapped: no answer
    ("The answer is 5.", "5", 0.0),  # no box: no answer
    ("\\boxed{7}", "8", 0.0),
    ("\\boxed{C}", "C", 1.0), ("\\boxed{\\text{C}}", "C", 1.0), ("\\boxed{B}", "C", 0.0),
    ("\\boxed{C}", "3", 0.0), ("\\boxed{3}", "3", 1.0),  # ARC digit labels: literal match only
])
def test_oat_grader_labels(response, reference, label):
    assert grade_oat(response, reference)[0] == label


def test_oat_boxed_is_the_last_box():
    assert oat_boxed("\\boxed{1} then \\boxed{\\frac{2}{3}}") == "\\frac{2}{3}" and oat_boxed("none") is None


def test_choice_grading_requires_a_box_with_the_literal_label(suites_dir):
    arc = SUITES["arc_c"].load(str(suites_dir), "luffy")  # B, and the digit-labelled row (reference 3)
    texts = ["ANSWER: B", "\\boxed{C}"]
    ours = grade(SUITES["arc_c"], arc, texts, EvalConfig(protocol="ours"))
    luffy = grade(SUITES["arc_c"], arc, texts, EvalConfig(protocol="luffy"))
    assert [r[0] for r in ours] == [1.0, 1.0]  # ours: stated letter; C names option 3 by position
    assert [r[0] for r in luffy] == [0.0, 0.0]
    assert [r[0] for r in grade(SUITES["arc_c"], arc, ["\\boxed{B}", "\\boxed{3}"], EvalConfig(protocol="luffy"))] \
        == [1.0, 1.0]


@pytest.mark.parametrize("protocol", ["ours", "paper", "luffy"])
def test_controls_under_each_protocol(suites_dir, tmp_path, protocol):
    import json

    acc = {}
    for control in ("oracle", "oracle-unboxed", "negative"):
        out = tmp_path / control
        assert main(["--model", control, "--suites", "aime24,math500,arc_c", "--data-dir", str(suites_dir),
                     "--output-dir", str(out), f"eval.protocol={protocol}"]) == 0
        acc[control] = {n: s["accuracy"] for n, s in json.loads((out / "summary.json").read_text())["suites"].items()}
    assert all(v == 1.0 for v in acc["oracle"].values()) and all(v == 0.0 for v in acc["negative"].values())
    unboxed = acc["oracle-unboxed"]
    assert unboxed["arc_c"] == (1.0 if protocol == "ours" else 0.0)  # ours reads `ANSWER: B`
    assert unboxed["aime24"] == 0.0  # every grader here needs a box


def test_build_messages_is_unchanged_by_protocols():
    assert build_messages("p", "i") == [{"role": "user", "content": "p\ni"}]
