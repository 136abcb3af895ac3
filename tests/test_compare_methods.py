"""scripts/compare_methods.py: compute-matched budgets, the learning-rate sweep and checkpoint selection on
validation, SFT -> X from the SFT checkpoint, and the aggregation arithmetic."""

import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import config_from_dict

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_methods.py"
spec = importlib.util.spec_from_file_location("compare_methods", SCRIPT)
cm = importlib.util.module_from_spec(spec)
sys.modules["compare_methods"] = cm  # dataclasses look their module up
spec.loader.exec_module(cm)


def _cfg(name, base="compare_toy", **kw):
    kw = {"lr": 1e-4, "rl_steps": 20, "val_suite": "toy_val", "sft_checkpoint": "/ckpt/sft", **kw}
    return config_from_dict(cm.method_config(cm.BY_NAME[name], base, 1, [], **kw))


def test_mean_std_hand_computed():
    # mean (0.2 + 0.4 + 0.6) / 3 = 0.4; sample var ((-.2)^2 + 0 + .2^2) / 2 = 0.04 -> std 0.2
    m, s = cm.mean_std([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4) and s == pytest.approx(0.2)
    assert cm.mean_std([0.5]) == (0.5, 0.0)


def test_sft_gets_the_compute_of_the_rl_budget():
    # RL step: 32 prompts x 8 samples x 4 forward-equivalents; SFT step: 32 demonstrations x 3 ->
    # 20 RL steps = 20 * 1024 / 96 = 213.3 -> 213 SFT steps
    c = _cfg("sft")
    assert c.sft.mode == "only" and c.train.total_steps == 213 and c.sft.lr == 1e-4 and c.update.lr == 1e-4
    # trained to convergence: sft_cap x 213 steps on a cosine to 0, validated 8 times over the run
    # (213 // 8 = 26; 6 x 213 = 1278 // 8 = 159), no early stopping; warm-up 213 // 20 = 10 steps either way
    assert c.eval.validation.every == 26 and c.train.save_every == c.train.state_every == 26 and c.sft.warmup_steps == 10
    assert c.eval.validation.patience == 0 and (c.sft.decay, c.sft.min_lr_ratio) == ("cosine", 0.0)
    capped = _cfg("sft", sft_cap=6)
    assert capped.train.total_steps == 6 * 213 and capped.eval.validation.every == 159
    matched = config_from_dict(cm.method_config(cm.BY_NAME["sft-matched"], "compare_toy", 1, [], lr=1e-4,
                                                rl_steps=20, val_suite="toy_val", sft_cap=6))
    assert matched.train.total_steps == 213 and matched.sft.decay == "cosine"  # its own cosine, no cap
    assert capped.sft.warmup_steps == 10 and _cfg("rft", sft_cap=6).train.total_steps == 20  # RL rows: no cap
    assert _cfg("rft").eval.validation.patience == 0  # RL rows run their whole budget
    assert _cfg("sft", lr=3e-5).sft.lr == 3e-5 and isinstance(_cfg("rft", lr=3e-5).update.lr, float)


def test_every_rl_method_gets_the_same_budget_and_validation():
    cfgs = {m.name: _cfg(m.name, lr=3e-4) for m in cm.METHODS if m.recipe != "sft"}
    for name, c in cfgs.items():
        assert c.train.seed == 1 and c.eval.at_start is False and c.eval.at_end is False, name
        assert c.train.total_steps == 20 and c.update.lr == 3e-4 and c.eval.validation.every == 4, name
        assert c.eval.validation.suites == ["toy_val"] and c.train.save_every == 4, name
        assert c.data.toy.levels == [2, 3, 4, 5, 6] and c.prefixes.prompts_per_step == 32, name
        assert c.generate.max_response_tokens == cfgs["prefix-rft"].generate.max_response_tokens, name
    for name in ("sft-rft", "sft-prefix-rft", "sft-luffy"):
        assert cfgs[name].model.name_or_path == "/ckpt/sft", name
    assert cfgs["rft"].model.name_or_path == "embedded"
    assert cfgs["rft"].prefixes.hybrids_per_prompt == 0 and cfgs["sft-rft"].prefixes.hybrids_per_prompt == 0
    assert cfgs["sft-prefix-rft"].objective.gate == "top" and cfgs["sft-prefix-rft"].prefixes.hybrids_per_prompt == 1
    assert cfgs["sft-luffy"].objective.prefix_loss == "shaped" == cfgs["luffy"].objective.prefix_loss
    assert cfgs["gate-bottom"].objective.gate == "bottom" and cfgs["prefix-rft"].objective.gate == "top"
    assert cfgs["uniform"].prefixes.schedule == "uniform" and cfgs["prefix-rft"].prefixes.schedule == "cosine"


def test_countdown_task_keeps_its_data_and_model_for_every_method():
    for m in cm.METHODS:
        c = _cfg(m.name, base="compare_countdown", val_suite="countdown_val")
        assert c.data.source == "countdown" and c.eval.suites == ["countdown"], m.name
        if not m.from_sft:
            assert c.model.name_or_path == "embedded:countdown", m.name


def test_checkpoint_selection_is_the_best_validation_step():
    assert cm.select_step([(4, 0.3), (8, 0.5), (12, 0.5), (16, 0.4)]) == 8  # earliest of the ties
    with pytest.raises(cm.UserError):
        cm.select_step([])


def test_aggregate_and_table():
    rs = [cm.RunResult("rft", s, acc, {"1": acc}, 0.5, 10.0, [(4, 0.1), (8, acc)], lr=1e-4, selected_step=8,
                       compute={"total_flops": 2e15, "rollout_tokens": 100}) for s, acc in ((0, 0.3), (1, 0.5))]
    agg = cm.aggregate(rs, {"accuracy": 0.1, "accuracy_by_level": {"1": 0.1}})
    v = agg["methods"]["rft"]
    assert v["accuracy"] == pytest.approx(0.4) and v["accuracy_std"] == pytest.approx(math.sqrt(0.02))
    md = cm.results_markdown(agg, "# t")
    assert "| RFT (Dr. GRPO) | 0.0001 | 40.0 ± 14.1 | 40.0 ± 14.1 | 8,8 | 2/2 | 2000.00 | 100 | 10 |" in md
    assert "| base policy | - | 10.0 | 10.0 |" in md
    assert "Not converged at this budget: RFT (Dr. GRPO)." in md  # best at the last validation point


def test_a_learning_rate_chosen_at_an_end_of_its_grid_is_flagged():
    sweep = {3e-4: 0.245, 1e-3: 0.225, 3e-3: 0.175}
    assert cm.lr_edge(3e-4, sweep) == "low" and cm.lr_edge(3e-3, sweep) == "high" and cm.lr_edge(1e-3, sweep) is None
    assert cm.lr_edge(1e-4, {1e-4: 0.3}) is None and cm.lr_edge(1e-4, None) is None  # nothing swept: no edge
    rs = [cm.RunResult("sft", s, 0.4, {}, None, 1.0, [(10, 0.2), (20, 0.3), (30, 0.25)], lr=3e-4, selected_step=20)
          for s in (0, 1)]
    agg = cm.aggregate(rs, None, {"sft": sweep})
    v = agg["methods"]["sft"]
    assert v["lr_at_edge"] == "low" and v["lr_sweep"] == {"0.0003": 0.245, "0.001": 0.225, "0.003": 0.175}
    md = cm.results_markdown(agg, "# t")
    assert "| SFT (converged) | 0.0003 (low end) | 40.0 ± 0.0 |" in md
    assert ("**Learning rate chosen at an end of its grid: SFT (converged) (low end; seed 0's best validation "
            "0.245 at 0.0003 / 0.225 at 0.001 / 0.175 at 0.003).**") in md
    mid = cm.results_markdown(cm.aggregate([dataclasses.replace(r, lr=1e-3) for r in rs], None, {"sft": sweep}), "")
    assert "| 0.001 |" in mid and "end of its grid" not in mid


def test_the_grids_can_be_widened_from_the_command_line(tmp_path, capsys):
    assert cm.main(["--output-dir", str(tmp_path), "--dry-run", "--tasks", "toy", "--methods", "sft,rft",
                    "--lrs", "1e-5,3e-5,1e-4,3e-4", "--sft-lrs", "1e-4,3e-4"]) == 0
    protocol = (tmp_path / "protocol.md").read_text()
    assert "chosen per method from 1e-05, 3e-05, 0.0001, 0.0003" in protocol
    assert "sft.lr from 0.0001, 0.0003" in protocol
    names = {p.name for p in (tmp_path / "toy/configs").glob("*-seed0.yaml")}
    assert {"rft-lr1e-05-seed0.yaml", "sft-lr0.0001-seed0.yaml"} <= names and len(names) == 4 + 2
    for bad in ("1e-4,x", "0,1e-4", "1e-4,1e-4", ""):
        assert cm.main(["--output-dir", str(tmp_path), "--dry-run", "--lrs", bad]) == 2
        assert "--lrs must be distinct positive numbers" in capsys.readouterr().err


def test_runs_still_rising_at_the_end_of_their_budget_are_flagged():
    assert cm.still_rising([(2, 0.1), (4, 0.2), (6, 0.3)], 6) and cm.still_rising([(2, 0.1), (4, 0.3), (6, 0.2)], 4)
    assert not cm.still_rising([(2, 0.1), (4, 0.3), (6, 0.2), (8, 0.2)], 4)  # peaked, then fell or stayed
    assert not cm.still_rising([(2, 0.4)], 2)  # one point says nothing
    rs = [cm.RunResult("sft", s, 0.4, {}, None, 1.0, curve, lr=3e-4, selected_step=sel)
          for s, (curve, sel) in enumerate((([(10, 0.2), (20, 0.3), (30, 0.25)], 20),
                                            ([(10, 0.3), (20, 0.2), (30, 0.2)], 10)))]
    agg = cm.aggregate(rs, None)
    assert agg["methods"]["sft"]["still_rising"] == 1
    assert "| 20,10 | 1/2 |" in cm.results_markdown(agg, "# t")
    # a seed that peaked before a noisy last point but was ended by its step cap is not converged either
    rs[1].capped = True
    agg = cm.aggregate(rs, None)
    v = agg["methods"]["sft"]
    assert (v["still_rising"], v["capped"], v["not_converged"]) == (1, 1, 2)
    md = cm.results_markdown(agg, "# t")
    assert "| 20,10 | 2/2 (1 capped) |" in md and "**Not converged at this budget: SFT (converged).**" in md


def test_an_annealed_sft_run_is_rising_only_when_its_last_quarter_gains_beyond_noise(tmp_path):
    # 8 points: the last quarter is steps 70, 80; its best 0.96 (step 80) against 0.935 (step 60) before it:
    # a gain of 0.025, two standard errors of the difference 2 * hypot(0.01, 0.01) = 0.0283 -> within noise
    curve = [(10, 0.3), (20, 0.5), (30, 0.7), (40, 0.8), (50, 0.9), (60, 0.935), (70, 0.95), (80, 0.96)]
    se = {s: 0.01 for s, _ in curve}
    assert cm.still_rising(curve, 80) and not cm.still_rising_annealed(curve, se)
    # the same curve with stderr 0.008 (2 * hypot = 0.0226 < 0.025) is still rising
    assert cm.still_rising_annealed(curve, {s: 0.008 for s, _ in curve})
    assert not cm.still_rising_annealed([(10, 0.3)], se)  # one point says nothing
    # read_run takes the annealed rule from the run's config and the stderr from its validation summaries
    import yaml

    run = tmp_path / "run"
    (run / "eval" / "validation").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"sft": {"mode": "only", "decay": "cosine", "min_lr_ratio": 0.0}}))
    (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "compute": {}}))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "val_toy_val_accuracy": a}) for s, a in curve))
    for s_, _ in curve:
        (run / "eval" / "validation" / f"step-{s_:06d}").mkdir()
        (run / "eval" / "validation" / f"step-{s_:06d}" / "summary.json").write_text(
            json.dumps({"suites": {"toy_val": {"stderr": 0.01}}}))
    held = {"accuracy": 0.9}
    r = cm.read_run(run, "sft", 0, 1e-3, cm.TASKS["toy"], held, 80)
    assert r.rising is False and cm.aggregate([r], None)["methods"]["sft"]["not_converged"] == 0
    # the same curve from a run at a constant rate: its best is its last point, so it is still rising
    (run / "config.yaml").write_text(yaml.safe_dump({"sft": {"mode": "only", "decay": "constant"}}))
    assert cm.read_run(run, "sft", 0, 1e-3, cm.TASKS["toy"], held, 80).rising is True


def test_a_run_with_early_stopping_that_its_step_cap_ended_is_capped():
    def run(patience, **summary):
        return cm.capped_by_steps({"eval": {"validation": {"patience": patience}}}, summary)

    assert run(4, steps=642, steps_cap=642, stopped_early=False)  # SFT that never met the plateau rule
    assert not run(4, steps=546, steps_cap=642, stopped_early=True)  # the plateau rule stopped it
    assert not run(0, steps=10, steps_cap=10, stopped_early=False)  # an RL run: no early stopping, always capped


VAL = {1e-4: [0.2, 0.6], 3e-4: [0.5, 0.4], 3e-5: [0.1, 0.1], 1e-3: [0.3, 0.3], 3e-3: [0.2, 0.2]}  # lr -> val. at 4, 8


def _fake_runs(monkeypatch, val=VAL):
    """Training and evaluation replaced by recorded runs: (trained [(method, model)], evaluated [checkpoint])."""
    trained, evaluated = [], []

    def fake_run_one(cfg_path, run_dir, priority=0):
        import yaml

        raw = yaml.safe_load(cfg_path.read_text())
        trained.append((run_dir.parent.name, raw["model"]["name_or_path"]))
        lr = raw["sft"]["lr"] if (raw.get("sft") or {}).get("mode") == "only" else raw["update"]["lr"]
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg_path.read_text())  # as a run writes its resolved config
        suite = raw["eval"]["validation"]["suites"][0]
        rows = [{"step": s, "phase": "rl", f"val_{suite}_accuracy": a, "model_flops": 1.0}
                for s, a in zip((4, 8), val[lr])]
        (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (run_dir / "summary.json").write_text(json.dumps({"wall_seconds": 5.0, "compute": {"total_flops": 10.0},
                                                          "reward_last_quarter": None}))

    def fake_eval(ckpt, suite, out, overrides, priority=0):
        evaluated.append(str(ckpt))
        return {"accuracy": 0.25, "accuracy_by_level": {"2": 0.25}}

    def fake_evals(jobs, suite, overrides, log, priority=0):
        return [cm.evaluate_checkpoint(c, suite, o, overrides, priority) for c, o in jobs]  # the patched one

    monkeypatch.setattr(cm, "run_one", fake_run_one)
    monkeypatch.setattr(cm, "evaluate_checkpoint", fake_eval)
    monkeypatch.setattr(cm, "evaluate_checkpoints", fake_evals)
    monkeypatch.setattr(cm, "starting_model_identity",  # no embedded build: the name stands for the policy
                        lambda cfg: {"name_or_path": cfg.name_or_path, "resolved": cfg.name_or_path,
                                     "fingerprint": "f"})
    return trained, evaluated


def test_held_out_evaluations_run_in_one_subprocess_and_resume(tmp_path):
    """evaluate_checkpoints: the real evaluation.run command line, one process for every checkpoint not yet
    evaluated, each into its own folder; a second call evaluates only the new one."""
    small = ["eval.max_problems=5", "eval.samples_per_problem=1"]
    jobs = [("oracle", tmp_path / "a"), ("negative", tmp_path / "b")]
    log = tmp_path / "heldout.log"
    got = cm.evaluate_checkpoints(jobs, "toy", small, log)
    assert [g["accuracy"] for g in got] == [1.0, 0.0] and got[0]["problems"] == 5
    assert log.read_text().count("eval oracle toy") == 1 and log.read_text().count("eval negative toy") == 1
    got = cm.evaluate_checkpoints([*jobs, ("oracle", tmp_path / "c")], "toy", small, log)
    assert [g["accuracy"] for g in got] == [1.0, 0.0, 1.0]
    assert log.read_text().count("eval oracle toy") == 2 and log.read_text().count("eval negative toy") == 1
    with pytest.raises(cm.UserError, match="evaluation of 1 checkpoint"):
        cm.evaluate_checkpoints([("oracle", tmp_path / "d")], "no-such-suite", small, log)


def test_lr_is_chosen_on_validation_and_sft_checkpoint_feeds_sft_then_x(tmp_path, monkeypatch):
    """The sweep's choice and the SFT hand-over, with training and evaluation replaced by recorded runs."""
    trained, evaluated = _fake_runs(monkeypatch)
    preset = {"rl_steps": 20, "seeds": (0, 1), "lrs": cm.LRS, "eval": (), "val_problems": 100000}
    comp = cm.Comparison(cm.TASKS["toy"], tmp_path, preset, [cm.BY_NAME["sft-rft"], cm.BY_NAME["sft"]], [0, 1], [],
                         False)
    agg = comp.run()
    # 1e-4 reaches the best validation accuracy (0.6 at step 8): chosen for both methods, step 8 selected
    assert agg["methods"]["sft"]["lr"] == 1e-4 and agg["methods"]["sft-rft"]["lr"] == 1e-4
    assert agg["methods"]["sft"]["selected_steps"] == [8, 8]
    sft_ckpt = str(tmp_path / "toy/runs/sft/lr0.0001-seed{}/checkpoints/step-000008")
    # SFT ran first (3 LRs on seed 0, then seed 1); SFT -> RFT of seed k starts from SFT seed k's selected checkpoint
    assert [t[0] for t in trained[:4]] == ["sft"] * 4
    assert ("sft-rft", sft_ckpt.format(0)) in trained and ("sft-rft", sft_ckpt.format(1)) in trained
    # SFT -> RFT is charged its own compute plus the SFT run's
    assert agg["methods"]["sft-rft"]["total_flops"] == 20.0 and agg["methods"]["sft"]["total_flops"] == 10.0
    assert evaluated[0] == "embedded" and sft_ckpt.format(0) in evaluated  # the base, then selected checkpoints


def test_a_rebuilt_starting_policy_is_refused_not_mixed_with_the_old_runs(tmp_path, monkeypatch, capsys):
    _fake_runs(monkeypatch)
    args = ["--output-dir", str(tmp_path), "--tasks", "toy", "--methods", "rft", "--seeds", "0", "--jobs", "1"]
    assert cm.main(args) == 0
    assert json.loads((tmp_path / "toy/starting_model.json").read_text())["resolved"] == "embedded"
    assert cm.main(args) == 0  # the same policy: resumed
    monkeypatch.setattr(cm, "starting_model_identity",  # the same name, another build
                        lambda cfg: {"name_or_path": cfg.name_or_path, "resolved": "default-0123", "fingerprint": "g"})
    assert cm.main(args) == 2
    err = capsys.readouterr().err
    assert "was trained from another embedded (embedded; now default-0123)" in err and "new --output-dir" in err
    (tmp_path / "toy/starting_model.json").unlink()  # a directory from before the record existed: resumed, with a note
    assert cm.main(args) == 0
    assert "has runs from before starting_model.json existed" in capsys.readouterr().err


def test_the_starting_policy_identity_names_the_resolved_folder(micro_path):
    from pipeline.config import ModelConfig
    from pipeline.policy import model_fingerprint

    cfg = ModelConfig(name_or_path=str(micro_path))
    ident = cm.starting_model_identity(cfg)
    assert ident == {"name_or_path": str(micro_path), "resolved": micro_path.name,
                     "fingerprint": model_fingerprint(str(micro_path), cfg)}


def test_unknown_method_is_a_one_line_error(tmp_path, capsys):
    assert cm.main(["--output-dir", str(tmp_path), "--methods", "prefix-rtf", "--dry-run"]) == 2
    assert "--methods: unknown prefix-rtf" in capsys.readouterr().err


def test_dry_run_writes_every_config(tmp_path, capsys):
    assert cm.main(["--output-dir", str(tmp_path), "--dry-run", "--preset", "default"]) == 0
    for task in ("toy", "countdown"):
        # 7 methods (SFT at matched compute only on request): sweep (3) + 2 seeds; the 4 ablations: 3 seeds at
        # Prefix-RFT's learning rate
        assert len(list((tmp_path / task / "configs").glob("*.yaml"))) == 7 * 5 + 4 * 3
        assert not list((tmp_path / task / "configs").glob("sft-matched-*"))
    # the default budget: 10 RL steps = 10 * 1024 / 96 = 106.7 -> 107 SFT steps; 2 runs at once
    protocol = (tmp_path / "protocol.md").read_text()
    assert "SFT 107 steps at matched compute" in protocol and "- runs: 2 at once" in protocol
    assert "the Prefix-RFT ablations train at Prefix-RFT's chosen value" in protocol
    assert "SFT's sft.lr from 0.0003, 0.001, 0.003" in protocol  # SFT's own grid, two points up
    assert "SFT trains to convergence: 428 steps" in protocol and "matched compute' trains" not in protocol
    assert {p.name for p in (tmp_path / "toy/configs").glob("sft-lr*-seed0.yaml")} == {
        "sft-lr0.0003-seed0.yaml", "sft-lr0.001-seed0.yaml", "sft-lr0.003-seed0.yaml"}
    assert cm.main(["--output-dir", str(tmp_path / "f"), "--dry-run", "--preset", "full", "--tasks", "toy"]) == 0
    assert len(list((tmp_path / "f/toy/configs").glob("*.yaml"))) == 12 * 5  # full: every row swept
    assert "the row 'SFT at matched compute' trains 533 steps" in (tmp_path / "f/protocol.md").read_text()


def test_sft_then_x_without_sft_is_a_clear_error(tmp_path, capsys):
    assert cm.main(["--output-dir", str(tmp_path), "--methods", "sft-rft", "--tasks", "toy", "--preset", "quick"]) == 2
    assert "include `sft` in --methods" in capsys.readouterr().err


def test_whole_command_writes_tables_and_plot_per_task(tmp_path, monkeypatch, capsys):
    _fake_runs(monkeypatch)
    assert cm.main(["--output-dir", str(tmp_path), "--methods", "sft,rft,sft-prefix-rft", "--seeds", "0,1"]) == 0
    for task in ("toy", "countdown"):
        res = json.loads((tmp_path / task / "results.json").read_text())
        assert set(res["methods"]) == {"sft", "rft", "sft-prefix-rft"} and res["lrs"] == list(cm.LRS)
        assert res["methods"]["rft"]["seeds"] == [0, 1] and res["methods"]["sft-prefix-rft"]["total_flops"] == 20.0
        assert "| SFT -> Prefix-RFT | 0.0001 | 25.0 ± 0.0 |" in (tmp_path / task / "results.md").read_text()
        assert (tmp_path / task / "accuracy_vs_compute.png").stat().st_size > 1000
    top = (tmp_path / "results.md").read_text()
    assert "## toy:" in top and "## countdown:" in top and "compare_methods protocol (preset default)" in top


def test_a_resumed_comparison_reports_its_wall_time_over_every_invocation(tmp_path, monkeypatch, capsys):
    """An invocation killed mid-way leaves its time in OUTPUT/wall_time.json (rewritten while it runs); the
    invocation that resumes and finishes reports its own time and the sum over both."""
    _fake_runs(monkeypatch)
    with cm.WallLedger(tmp_path, ["--preset", "full"], every=0.01) as ledger:
        ledger.t0 = time.time() - 300.0  # as if it had run 300 s when it was killed (its last save stays)
        time.sleep(0.1)  # the heartbeat rewrites the file while the command runs
        beat = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
        assert len(beat) == 1 and 300.0 <= beat[0]["seconds"] < 310.0 and beat[0]["complete"] is False
    assert cm.main(["--output-dir", str(tmp_path), "--methods", "rft", "--seeds", "0", "--tasks", "toy"]) == 0
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert [e["complete"] for e in inv] == [False, True] and inv[1]["argv"][-2:] == ["--tasks", "toy"]
    top = (tmp_path / "results.md").read_text()
    this = int(top.split("wall time of the whole command: ")[1].split(" s")[0])
    total = int(top.split("over 2 invocations (it was resumed): ")[1].split(" s")[0])
    assert abs(total - (inv[0]["seconds"] + this)) <= 1 and total >= 300
    assert "invocations)" in (tmp_path / "toy" / "results.md").read_text()
    (tmp_path / "wall_time.json").write_text("[]")
    assert cm.main(["--output-dir", str(tmp_path), "--methods", "rft", "--seeds", "0", "--tasks", "toy"]) == 2
    assert "wall_time.json: not a wall-time ledger this script wrote" in capsys.readouterr().err


def test_with_several_jobs_the_tasks_run_side_by_side(tmp_path, monkeypatch):
    """Each task's base-policy evaluation (which builds the task's embedded model on a fresh machine) waits
    here until the other task's has started: run one task after the other, the barrier would time out."""
    import threading

    _fake_runs(monkeypatch)
    fake_eval, barrier, seen = cm.evaluate_checkpoint, threading.Barrier(2, timeout=20), []

    def eval_together(ckpt, suite, out, overrides, priority=0):
        if out.name == "base_eval":
            seen.append(suite)
            barrier.wait()
        return fake_eval(ckpt, suite, out, overrides, priority)

    monkeypatch.setattr(cm, "evaluate_checkpoint", eval_together)
    assert cm.main(["--output-dir", str(tmp_path), "--methods", "rft", "--seeds", "0", "--jobs", "2"]) == 0
    assert sorted(seen) == ["countdown", "toy"]
    assert "## toy:" in (tmp_path / "results.md").read_text()


def test_jobs_do_not_change_results_and_ablations_can_take_prefix_rfts_lr(tmp_path, monkeypatch):
    """Two runs at once give the table one run at a time gives; SFT -> X still waits for SFT's selection;
    without the ablation sweep an ablation trains every seed at Prefix-RFT's chosen LR (3 runs, not 5)."""
    methods = [cm.BY_NAME[n] for n in ("sft-prefix-rft", "gate-all", "prefix-rft", "sft")]
    preset = {"rl_steps": 20, "seeds": (0, 1, 2), "lrs": cm.LRS, "eval": (), "val_problems": 100,
              "sweep_ablations": False}
    aggs, trained_by_jobs = {}, {}
    for jobs in (1, 2):
        trained, _ = _fake_runs(monkeypatch)
        monkeypatch.setattr(cm, "SLOTS", cm.Slots(jobs))
        comp = cm.Comparison(cm.TASKS["toy"], tmp_path / f"j{jobs}", preset, methods, [0, 1, 2], [], False)
        aggs[jobs], trained_by_jobs[jobs] = comp.run(), trained
    for v in aggs.values():
        del v["methods"]["sft"]["curves"]  # equal anyway; keeps the comparison message short
    assert aggs[1] == aggs[2]
    for trained in trained_by_jobs.values():
        assert sorted(t[0] for t in trained) == sorted(["sft"] * 5 + ["sft-prefix-rft"] * 5 + ["prefix-rft"] * 5
                                                       + ["gate-all"] * 3)
        last_sft = max(i for i, t in enumerate(trained) if t[0] == "sft")
        assert min(i for i, t in enumerate(trained) if t[0] == "sft-prefix-rft") > last_sft
    assert aggs[2]["methods"]["gate-all"]["lr"] == aggs[2]["methods"]["prefix-rft"]["lr"] == 1e-4
    assert sorted(p.name for p in (tmp_path / "j2/toy/runs/gate-all").iterdir()) == [
        "lr0.0001-seed0", "lr0.0001-seed1", "lr0.0001-seed2"]


def test_slots_run_at_most_jobs_subprocesses_with_their_share_of_threads(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    slots = cm.Slots(2)
    assert slots.env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    # four 1 s sleeps, two at a time: each logs its start and end; never three overlap
    cmd = [sys.executable, "-c", "import time, sys; print('s', time.time()); time.sleep(1.0); print('e', time.time())"]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        rcs = list(pool.map(lambda k: slots.run(cmd, tmp_path / f"{k}.log"), range(4)))
    assert rcs == [0, 0, 0, 0]
    events = sorted((float(t), +1 if kind == "s" else -1) for k in range(4)
                    for kind, t in (ln.split() for ln in (tmp_path / f"{k}.log").read_text().splitlines()))
    running = [sum(e for _, e in events[:i + 1]) for i in range(len(events))]
    assert max(running) == 2 and slots.free == 2


def test_a_relative_output_dir_is_resolved_before_runs_start(tmp_path, monkeypatch):
    # the runs are subprocesses started in the repository root: a relative --output-dir must not be read there
    _fake_runs(monkeypatch)
    fake, dirs = cm.run_one, []
    monkeypatch.setattr(cm, "run_one", lambda cfg, run_dir, priority=0: (dirs.append(run_dir), fake(cfg, run_dir)))
    monkeypatch.chdir(tmp_path)
    assert cm.main(["--output-dir", "rel", "--methods", "rft", "--tasks", "toy", "--preset", "quick"]) == 0
    assert dirs and all(d.is_absolute() and d.is_relative_to(tmp_path / "rel") for d in dirs)
    assert (tmp_path / "rel/toy/results.md").is_file()


def test_runs_with_the_same_curation_share_one_curate_folder(tmp_path):
    # a later run whose curate fingerprint an earlier run had gets that folder linked in, and its orchestrator
    # reuses it as its own; a run with other data does not; the hook runs once the run holds its slot
    import yaml
    from accelerate import Accelerator

    from pipeline import cache
    from pipeline.config import apply_overrides, load_config, read_recipe
    from pipeline.run import Run
    from stages import curate

    micro = ["model.name_or_path=embedded:micro", "data.toy.levels=[1,2]", "data.toy.problems_per_level=20"]

    def write_cfg(name, *extra):
        raw, _ = read_recipe("quickstart")
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(apply_overrides(raw, micro + list(extra))))
        return path

    same, other_lr, other_data = write_cfg("a"), write_cfg("b", "update.lr=3e-4"), write_cfg("c", "data.toy.seed=7")
    share = cm.CurateShare()
    first = tmp_path / "runs/first"
    assert not share.seed(same, first)  # nothing curated yet
    assert curate.main(["--config", str(same), "--output-dir", str(first)]) == 0
    share.record(same, first)

    slots = cm.Slots(1)
    second = tmp_path / "runs/second"
    second.mkdir(parents=True)
    seen = []
    rc = slots.run([sys.executable, "-c", "pass"], second / "log",
                   before=lambda: seen.append(share.seed(other_lr, second)))  # a training knob: same curation
    assert rc == 0 and seen == [True]
    run = Run(load_config(str(other_lr)), second, Accelerator(cpu=True))
    assert run.complete("curate") and run.fp("curate") == cache.read_stage(first / "curate").fingerprint
    assert run.run_stage("curate").meta == cache.read_stage(first / "curate").meta  # reused, not recomputed
    arrow = next((first / "curate/data").glob("*.arrow"))
    assert os.path.samefile(arrow, second / "curate/data" / arrow.name)  # linked, not copied
    assert not [p for p in second.iterdir() if p.name.startswith(".")]  # no temporary left behind

    third = tmp_path / "runs/third"
    third.mkdir()
    assert share.fingerprint(other_data) not in (None, share.fingerprint(same))
    assert not share.seed(other_data, third) and not (third / "curate").exists()  # other data: curates itself
    assert not share.seed(same, second)  # a run with its own curate folder keeps it


def test_sft_trains_to_convergence_and_the_matched_row_trains_its_own_runs(tmp_path, monkeypatch):
    """SFT (converged) trains sft_cap x the matched budget (1 RL step = round(1024 / 96) = 11 SFT steps; 3 x 11 =
    33), SFT at matched compute its own 11-step runs; each sweeps SFT's grid and selects on its own validation
    points, both on a cosine to 0; SFT -> RFT starts from the converged checkpoint."""
    conv_val = {1e-4: [0.2, 0.3, 0.5, 0.7], 3e-4: [0.4, 0.45, 0.5, 0.5], 1e-3: [0.1, 0.1, 0.1, 0.1]}
    matched_val = {1e-4: [0.2, 0.3], 3e-4: [0.4, 0.45], 1e-3: [0.1, 0.1]}
    trained, evaluated = _fake_runs(monkeypatch)
    fake, steps = cm.run_one, {}

    def sft_runs(cfg_path, run_dir, priority=0):  # 33-step runs validated at 4, 8, 16, 24; 11-step ones at 4, 8
        import yaml

        fake(cfg_path, run_dir, priority)
        raw = yaml.safe_load(cfg_path.read_text())
        if (raw.get("sft") or {}).get("mode") == "only":
            total = steps.setdefault(run_dir.parent.name, raw["train"]["total_steps"])
            assert total == raw["train"]["total_steps"] and raw["sft"]["decay"] == "cosine"
            val = conv_val if total == 33 else matched_val
            rows = [{"step": s, "phase": "sft", "val_toy_val_accuracy": a, "model_flops": 1.0}
                    for s, a in zip((4, 8, 16, 24), val[raw["sft"]["lr"]])]
            (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    monkeypatch.setattr(cm, "run_one", sft_runs)
    preset = {"rl_steps": 1, "seeds": (0, 1), "lrs": cm.LRS, "sft_lrs": (1e-4, 3e-4, 1e-3), "eval": (), "val_problems": 100,
              "sft_cap": 3}
    methods = [cm.BY_NAME[n] for n in ("sft-matched", "sft-rft", "sft")]
    agg = cm.Comparison(cm.TASKS["toy"], tmp_path, preset, methods, [0, 1], [], False).run()
    assert steps == {"sft": 33, "sft-matched": 11}
    conv, matched = agg["methods"]["sft"], agg["methods"]["sft-matched"]
    assert (conv["lr"], conv["selected_steps"]) == (1e-4, [24, 24])  # 0.7 at step 24
    assert (matched["lr"], matched["selected_steps"]) == (3e-4, [8, 8])  # its own runs: 0.45 beats 0.3
    assert matched["curves"]["0"] == [(4, 0.4), (8, 0.45)]
    # annealed runs: the last quarter's best (0.45) beats the best before it (0.4) with no stderr known: rising
    assert matched["still_rising"] == 2 and conv["still_rising"] == 2
    assert sorted(t[0] for t in trained) == ["sft"] * 4 + ["sft-matched"] * 4 + ["sft-rft"] * 4
    assert sorted(p.name for p in (tmp_path / "toy/runs/sft-matched").iterdir()) == [
        "lr0.0001-seed0", "lr0.0003-seed0", "lr0.0003-seed1", "lr0.001-seed0"]
    ckpt = str(tmp_path / "toy/runs/sft/lr0.0001-seed1/checkpoints/step-000024")
    assert ("sft-rft", ckpt) in trained and ckpt in evaluated
    assert str(tmp_path / "toy/runs/sft-matched/lr0.0003-seed1/checkpoints/step-000008") in evaluated
    assert "| SFT at matched compute | 0.0003 |" in cm.results_markdown(agg, "# t")


def test_a_run_trained_with_other_settings_is_never_read_as_this_one(tmp_path):
    import yaml

    from pipeline.config import config_from_dict, dump_yaml

    raw = cm.method_config(cm.BY_NAME["rft"], "compare_toy", 0, [], lr=1e-4, rl_steps=10, val_suite="toy_val")
    cfg_path, run_dir = tmp_path / "rft.yaml", tmp_path / "runs/rft"
    cfg_path.write_text(yaml.safe_dump(raw))
    assert cm.stored_config_changes(cfg_path, run_dir) == ""  # nothing there yet
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_yaml(config_from_dict(raw, "x")))
    (run_dir / "summary.json").write_text("{}")
    cm.run_one(cfg_path, run_dir)  # the same config: kept as it is (no training)
    other = cm.apply_overrides(raw, ["train.total_steps=50"])
    cfg_path.write_text(yaml.safe_dump(other))
    with pytest.raises(cm.UserError, match="holds a run with another config .*train.total_steps: 10 -> 50"):
        cm.run_one(cfg_path, run_dir)
