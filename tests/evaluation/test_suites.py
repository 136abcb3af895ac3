"""Suites: reference answers from the right field per format, data-dir layouts, protocols, groups."""

import pytest

from evaluation.suites import (GROUPS, SUITES, choice_item, find_local, math_answer, minerva_answer, olympiad_answer,
                               reference_text, resolve_suites)
from pipeline.errors import UserError


@pytest.mark.parametrize("value, expected", [
    (142.0, "142"), (-4.0, "-4"), (0.5, "0.5"), (27, "27"), (" 204 ", "204"), (["$69$,$84$"], "$69$,$84$"),
    ([], None), (None, None), ("", None), (True, None),
])
def test_reference_text(value, expected):
    assert reference_text(value) == expected


def test_reference_field_per_format():
    assert math_answer("amc", {"problem": "p", "answer": 142.0}, 0).answer == "142"
    assert math_answer("aime25", {"question": "q", "answer": "70"}, 3).problem == "q"
    item = math_answer("math500", {"problem": "p", "answer": "\\frac{1}{2}", "level": 3, "unique_id": "u/1"}, 0)
    assert (item.answer, item.level, item.id) == ("\\frac{1}{2}", 3, "math500-u/1")
    # Minerva: the last box of the solution (not the first), or `answer` where the copy has one
    sol = "First \\boxed{3} is wrong; so $s=\\boxed{1.6} \\mathrm{~cm}$"
    assert minerva_answer("minerva", {"problem": "p", "solution": sol}, 0).answer == "1.6"
    assert minerva_answer("minerva", {"question": "p", "answer": "7", "solution": sol}, 0).answer == "7"
    # OlympiadBench: final_answer[0]; a multi-answer row keeps the whole list, without `$`
    ob = olympiad_answer("olympiadbench", {"question": "q", "final_answer": ["$69$,$84$"], "context": "c"}, 0)
    assert ob.answer == "69,84" and ob.problem == "c\nq"
    with pytest.raises(UserError, match="row 5 has no reference answer"):
        math_answer("aime24", {"problem": "p", "answer": None}, 5)


def test_choice_layouts():
    luffy = {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?\n\n1) a\n2) b\n3) c\n"}],
             "reward_model": {"ground_truth": "2"}}
    item = choice_item("arc_c", luffy, 0)
    assert (item.answer, item.labels, item.system_prompt, item.instruct) == ("B", ("1", "2", "3"), "S", False)
    assert item.problem == luffy["prompt"][1]["content"] and item.question == "Q?"
    arc = {"id": "x", "question": "Q?", "choices": {"text": ["a", "b", "c", "d"], "label": ["A", "B", "C", "D"]},
           "answerKey": "D"}
    item = choice_item("arc_c", arc, 0)
    assert item.answer == "D" and item.problem == "Q?\n\nA) a\nB) b\nC) c\nD) d\n"
    gpqa = {"Question": "Q?", "Correct Answer": "right", "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2",
            "Incorrect Answer 3": "w3"}
    a, b = choice_item("gpqa_diamond", gpqa, 0), choice_item("gpqa_diamond", gpqa, 0)
    assert a == b and a.options[ord(a.answer) - ord("A")] == "right"  # seeded shuffle, reference follows it
    mmlu = {"question_id": 1, "question": "Q?", "options": [str(i) for i in range(10)], "answer": "J"}
    item = choice_item("mmlu_pro", mmlu, 0)
    assert item.answer == "J" and len(item.labels) == 10 and item.problem.endswith("J) 9\n")
    with pytest.raises(UserError, match="names none of its 4 options"):
        choice_item("gpqa_diamond", {**luffy, "prompt": [luffy["prompt"][0], {"role": "user", "content":
                                      "Q\n\nA) a\nB) b\nC) c\nD) d"}], "reward_model": {"ground_truth": "F"}}, 0)


def test_all_suites_load_from_the_shared_layout(suites_dir):
    counts = {name: len(SUITES[name].load(str(suites_dir))) for name in GROUPS["math"] + GROUPS["general"]}
    assert counts == {"aime24": 3, "aime25": 2, "amc": 3, "math500": 2, "minerva": 2, "olympiadbench": 2,
                      "arc_c": 2, "gpqa_diamond": 2, "mmlu_pro": 2}
    arc = SUITES["arc_c"].load(str(suites_dir))
    assert [it.answer for it in arc] == ["B", "C"] and arc[1].labels == ("1", "2", "3")
    assert [it.answer for it in SUITES["minerva"].load(str(suites_dir))] == ["1.6", "4.5e33"]


def test_luffy_protocol_groups_replicas(suites_dir):
    items = SUITES["aime24"].load(str(suites_dir), "luffy")
    assert len(items) == 1 and items[0].samples == 3 and items[0].answer == "200"
    # generate_vllm.py asserts remove_system and drops valid.all's system turn; no instruction is added
    assert items[0].system_prompt is None and not items[0].instruct and items[0].problem == "Find 0 + 200."
    assert SUITES["amc"].load(str(suites_dir), "luffy")[0].answer == "142.0"  # as it is
    assert len(SUITES["amc23"].load(str(suites_dir), "luffy")) == 1  # not in valid.all: paper items


def test_data_dir_layouts(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "aime24.jsonl").write_text('{"problem": "p", "answer": "1"}\n')
    assert find_local(str(tmp_path / "flat"), ("aime24.jsonl",), "x") == tmp_path / "flat" / "aime24.jsonl"
    with pytest.raises(UserError, match="none of amc83.jsonl, amc.jsonl found in"):
        SUITES["amc"].load(str(tmp_path / "flat"))
    with pytest.raises(UserError, match="unknown protocol 'lufy'"):
        SUITES["amc"].load(str(tmp_path / "flat"), "lufy")


def test_groups_and_unknown_names():
    assert [s.name for s in resolve_suites(["math", "general", "aime24"])] == GROUPS["math"] + GROUPS["general"]
    assert len(GROUPS["math"]) == 6 and "amc23" not in GROUPS["math"]
    with pytest.raises(UserError, match="unknown suite 'aime2024'"):
        resolve_suites(["aime2024"])
