"""scripts/demo_entropy.py: which demonstration tokens are choices and which are arithmetic results, the entropy
it reads off the policy, and a run on the micro model end to end."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("demo_entropy", ROOT / "scripts" / "demo_entropy.py")
demo_entropy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_entropy)


def test_token_kinds_split_choices_from_results():
    text = "9 - 4 = 5. 5 * 3 = 15. The answer is \\boxed{(9 - 4) * 3}."
    # hand-made spans: "9", " -", " 4", " =", " 5", ".", " 5", " *", " 3", " =", " 1", "5", ".", " The..."
    offsets = [(0, 1), (1, 3), (3, 5), (5, 7), (7, 9), (9, 10), (10, 12), (12, 14), (14, 16), (16, 18), (18, 20),
               (20, 21), (21, 22), (22, len(text))]
    assert demo_entropy.token_kinds(text, offsets) == [
        "choice", "choice", "choice", "other", "result", "other", "choice", "choice", "choice", "other", "result",
        "result", "other", "other"]


class _Uniform(torch.nn.Module):
    def forward(self, input_ids):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 7)})()


def test_entropy_of_a_uniform_policy_is_log_vocab():
    h = demo_entropy.entropies(_Uniform(), [1, 2, 3], [4, 5])
    assert h.shape == (2,) and torch.allclose(h, torch.full((2,), math.log(7)))


def test_runs_on_a_checkpoint_and_prints_one_json_line(micro_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_entropy.py"), "--task", "toy", "--model",
                          str(micro_path), "--per-level", "2"], capture_output=True, text=True, check=True)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["problems"] == 12 and rec["tokens"] == sum(rec["tokens_by_kind"].values())
    assert rec["tokens_by_kind"]["choice"] > 0 and rec["tokens_by_kind"]["result"] > 0
    assert 0.2 <= rec["share_of_entropy_in_top_20pct_tokens"] <= 1.0 and rec["mean_entropy"] > 0
