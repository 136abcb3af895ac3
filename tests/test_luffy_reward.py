"""LUFFY's v3 training reward: labels as LUFFY's math_verify_reward.py + main_mix_ppo.py compute them."""

import pytest

from pipeline.luffy_reward import luffy_segment, luffy_v3_reward


@pytest.mark.parametrize("response,reference,reward", [
    ("I think 2+2 is 4.</think>\nThe answer is $4$.", "4", 1.0),  # no box needed
    ("thinking</think>\nSo the result is 42", "42", 1.0),  # plain number (number literal only)
    ("thinking</think>\nThe answer is \\boxed{\\frac{1}{2}}.", "0.5", 1.0),
    ("The answer is \\boxed{4}.", "4", 0.0),  # no </think>: 0
    ("a</think> $7$ </think> \\boxed{4}", "4", 0.0),  # graded up to the second </think> only
    ("a</think> wrong $5$", "4", 0.0),
])
def test_luffy_v3_labels(response, reference, reward):
    assert luffy_v3_reward([response], [reference])[0][0] == reward


def test_segment_is_between_the_first_and_second_end_think():
    assert luffy_segment("x</think>y</think>z") == "y" and luffy_segment("no tag") is None


def test_hostile_plain_text_is_not_evaluated():
    (reward, status, _), = luffy_v3_reward(["t</think> the answer is 9**9**9**9"], ["1"], timeout_s=5.0)
    assert reward == 0.0 and status in ("ok", "no_answer", "timeout", "error")
