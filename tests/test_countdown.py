"""The embedded Countdown task: solver, demonstrations, verifier (no eval), deterministic disjoint splits."""

import random
from fractions import Fraction

import pytest

from pipeline.embedded import countdown as cd
from pipeline.rewards import math_verify_reward


def _value(route):
    return route[-1][3] if route else None


@pytest.mark.parametrize("numbers,target", [((3, 4, 9), 15), ((2, 3, 4), 24), ((1, 1, 1, 1), 4), ((8, 2), 4),
                                            ((5, 5, 5, 5), 1)])
def test_solver_finds_a_valid_route(numbers, target):
    route = cd.solve(numbers, target)
    assert route is not None and _value(route) == target
    pool = list(numbers)
    for a, op, b, r in route:  # every step combines two numbers still in the pool under the game's rules
        pool.remove(a)
        pool.remove(b)
        assert cd.apply(a, op, b) == r and r > 0
        pool.append(r)
    assert pool == [target]


def test_solver_hand_checked_cases():
    # 2, 3: sums/products/differences/quotients are 5, 6, 1 and none (3/2 is not exact)
    assert cd.solve((2, 3), 7) is None and cd.solve((2, 3), 5) == [(3, "+", 2, 5)]
    assert cd.solve((2, 3), 6) == [(3, "*", 2, 6)] and cd.solve((2, 3), 1) == [(3, "-", 2, 1)]
    assert cd.solve((4, 6), 2) == [(6, "-", 4, 2)] and cd.solve((2, 6), 3) == [(6, "/", 2, 3)]
    # 1, 2, 3 -> 9 only as (1 + 2) * 3; 100 is out of reach (the largest value is (1 + 2) * 3 = 9)
    assert cd.solve((1, 2, 3), 9) == [(2, "+", 1, 3), (3, "*", 3, 9)]
    assert cd.solve((1, 2, 3), 100) is None
    # intermediate values stay positive integers: 4 - 4 = 0 is not allowed, so 4, 4, 7 -> 7 needs 4 / 4 * 7
    route = cd.solve((4, 4, 7), 7)
    assert route is not None and all(r > 0 for *_, r in route) and (4, "-", 4, 0) not in route


def test_demonstration_format_and_expression():
    route = [(9, "-", 4, 5), (5, "*", 3, 15)]
    assert cd.demonstration((3, 4, 9), route) == "9 - 4 = 5. 5 * 3 = 15. The answer is \\boxed{(9 - 4) * 3}."
    p = cd.Problem(2, (3, 4, 9), 15)
    assert p.answer == "countdown:15:3,4,9"
    assert cd.check_expression(p.demonstration.split("boxed{")[1][:-2], p.answer) == (1.0, "ok")


@pytest.mark.parametrize("expr,score,status", [
    ("(9 - 4) * 3", 1.0, "ok"),
    ("3 * (9 - 4)", 1.0, "ok"),
    ("3 \\times (9 - 4)", 1.0, "ok"),
    ("9 + 4 + 3", 0.0, "ok"),            # uses the numbers, misses the target (16)
    ("(9 - 4) * 3 + 0", 0.0, "ok"),      # an extra number
    ("15", 0.0, "ok"),                    # the target alone does not use the numbers
    ("(9 - 4) * 3 * 1", 0.0, "ok"),
    ("(9 - 3) * 4 / 2 + 3", 0.0, "ok"),   # numbers not given / repeated
    ("5 * 3", 0.0, "ok"),                 # 5 is not given
    ("(9 - 4 * 3", 0.0, "no_answer"),     # unbalanced
    ("__import__('os')", 0.0, "no_answer"),
    ("9 / 0 + 4 + 3", 0.0, "no_answer"),
    ("2" * 300, 0.0, "no_answer"),        # over the length cap
])
def test_verifier_accepts_and_rejects(expr, score, status):
    assert cd.check_expression(expr, "countdown:15:3,4,9") == (score, status)


@pytest.mark.parametrize("text,expected", [
    ("9 - 4 = 5. 5 * 3 = 15. The answer is \\boxed{(9 - 4) * 3}.", (2, 0)),
    ("9 - 4 = 6. 6 * 3 = 18.", (2, 1)),  # the first sum is wrong, the second right for its inputs
    ("4 - 9 = 5.", (1, 1)),  # negative step: not allowed by the game
    ("7 / 2 = 3. 8 / 2 = 4.", (2, 1)),  # inexact division is wrong, exact is right
    ("12 * 12 = 144. 99 + 1 = 100.", (2, 0)),  # multi-digit values
    ("The answer is \\boxed{(9 - 4) * 3}.", (0, 0)),  # the boxed expression is not a worked line
])
def test_line_errors_counts_wrong_worked_lines(text, expected):
    assert cd.line_errors(text) == expected


def test_wrong_line_rate_pools_lines_over_completions():
    assert cd.wrong_line_rate(["9 - 4 = 6. 6 * 3 = 18.", "4 - 9 = 5.", "no lines"]) == pytest.approx(2 / 3)
    assert cd.wrong_line_rate(["7 * 2 = 14."]) == 0.0
    assert cd.wrong_line_rate(["no worked lines"]) is None and cd.wrong_line_rate([]) is None


def test_every_demonstration_has_one_right_line_per_level():
    for p in cd.train_split([1, 2, 3, 4, 5], 20, 0):
        assert cd.line_errors(p.demonstration) == (p.level, 0), p.demonstration


def test_verifier_uses_exact_rationals_not_floats():
    # 8 / 3 * 3 = 8 exactly (a float path would also pass; 1/3 + 1/3 + 1/3 needs exact arithmetic)
    assert cd.check_expression("8 / 3 * 3", "countdown:8:3,3,8") == (1.0, "ok")
    assert cd.check_expression("1 / 3 + 1 / 3 + 1 / 3", "countdown:1:1,1,1,3,3,3") == (1.0, "ok")
    assert Fraction(1, 3) * 3 == 1


def test_reward_routes_countdown_references_and_keeps_math_verify():
    texts = ["9 - 4 = 5. 5 * 3 = 15. The answer is \\boxed{(9 - 4) * 3}.", "The answer is \\boxed{15}.",
             "The answer is \\boxed{17}."]
    out = math_verify_reward(texts, ["countdown:15:3,4,9", "countdown:15:3,4,9", "17"])
    assert [r[0] for r in out] == [1.0, 0.0, 1.0]
    assert out[0][2] == "(9 - 4) * 3"


def test_splits_are_deterministic_disjoint_and_solvable():
    a, b = cd.train_split([2, 3], 50, 0), cd.train_split([2, 3], 50, 0)
    assert a == b and len(a) == 100 and cd.train_split([2, 3], 50, 1) != a
    test = cd.test_split([1, 2, 3, 4, 5])
    val = cd.validation_split([2, 3, 4, 5])
    assert test == cd.test_split([1, 2, 3, 4, 5]) and len(val) == 160
    train = cd.train_split([1, 2, 3, 4, 5], 500, 0)
    texts = lambda ps: {p.text for p in ps}  # noqa: E731
    assert not texts(train) & texts(test) and not texts(val) & texts(test) and not texts(val) & texts(train)
    assert all(not cd.in_test_partition(p.text) for p in train) and all(cd.in_test_partition(p.text) for p in test)
    for p in train[::25] + test[::10]:
        assert len(p.numbers) == p.level + 1 and 1 <= p.target <= cd.MAX_TARGET
        assert math_verify_reward([p.demonstration], [p.answer])[0][0] == 1.0


def test_several_routes_exist_and_demonstrations_spread_over_first_moves():
    # the fork premise: across problems, the first combination of the demonstration varies
    probs = cd.train_split([3], 200, 0)
    firsts = {p.route[0][1] for p in probs}
    assert firsts == {"+", "-", "*", "/"} or len(firsts) >= 3
    # one problem, several distinct routes (search with different orders)
    p = cd.Problem(3, (2, 3, 4, 6), 24)
    routes = {tuple(cd.solve(p.numbers, 24, random.Random(s))) for s in range(20)}
    assert len(routes) >= 3


def test_countdown_tokenizer_covers_the_task():
    from pipeline.embedded.build import build_tokenizer

    tok = build_tokenizer(0, 384, "countdown")
    p = cd.train_split([3], 1, 0)[0]
    for text in (p.text, p.demonstration):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert all(len(tok(str(d), add_special_tokens=False)["input_ids"]) == 1 for d in range(10))
    assert all(len(tok(op, add_special_tokens=False)["input_ids"]) == 1 for op in "+-*/")


def test_curate_keeps_every_verified_countdown_demonstration(micro_tokenizer):
    from pipeline.config import DataConfig, ToyConfig
    from stages import curate

    cfg = DataConfig(source="countdown", toy=ToyConfig(levels=[2, 3], problems_per_level=30))
    report = {}
    ds = curate.run(curate.load_source(cfg), cfg, tokenizer=micro_tokenizer, report=report)
    assert len(ds) == 60 and report["dropped_demo_mismatch"] == 0 and all(ds["demo_verified"])
    assert set(ds["source"]) == {"countdown"} and ds[0]["answer"].startswith("countdown:")
    # a wrong demonstration is caught by the same verifier
    bad = curate.load_source(cfg).to_dict()
    bad["demonstration"][0] = bad["demonstration"][0].replace("\\boxed{", "\\boxed{1 + ")
    from pipeline import schema as S

    report = {}
    curate.run(S.make_dataset(bad), cfg, tokenizer=micro_tokenizer, report=report)
    assert report["dropped_demo_mismatch"] == 1


@pytest.mark.slow
def test_compare_countdown_recipe_trains_on_countdown(tmp_path, micro_path):
    """The Countdown recipe end to end on the micro model (its fast variant): curate, prefixes with demonstration
    slots, generation, the Countdown verifier as reward, update, and a validation pass on countdown_val."""
    import json

    from datasets import load_from_disk

    from pipeline.config import RECIPE_DIR, load_config
    from pipeline.run import train

    fast = [x.strip() for x in (RECIPE_DIR / "fast-variant.txt").read_text().splitlines()
            if x.strip() and not x.startswith("#")]
    cfg = load_config("compare_countdown", fast + ["data.toy.levels=[2]", "eval.at_start=false",
                                                   "eval.validation.every=2", "eval.validation.suites=[countdown_val]",
                                                   "eval.validation.problems=4", "eval.samples_per_problem=1"])
    assert cfg.data.source == "countdown" and cfg.eval.suites == ["countdown"]
    out = tmp_path / "cd"
    summary = train(cfg, out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and "val_countdown_val_accuracy" in rows[1]
    reward = load_from_disk(str(out / "steps" / "000001" / "reward" / "data"))
    assert all(a.startswith("countdown:") for a in reward["answer"])
    assert set(reward["reward_status"]) <= {"ok", "no_answer"}
    assert summary["eval"]["countdown"]["final"]["problems"] == 6 and summary["compute"]["rl_steps"] == 2
