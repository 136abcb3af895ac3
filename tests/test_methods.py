"""Every shipped method recipe runs 2 steps on the embedded micro model (its documented fast variant,
pipeline/recipes/fast-variant.txt), and every real-model recipe loads, validates and resolves offline."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from pipeline import methods
from pipeline import schema as S
from pipeline.config import RECIPE_DIR, list_recipes, load_config, to_dict
from pipeline.prompts import end_of_turn_ids
from pipeline.policy import load_model, load_patches, model_fingerprint, patched_config, resolve_model_path
from pipeline.run import train
from stages import replay, step_stages

FAST = [line.strip() for line in (RECIPE_DIR / "fast-variant.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")]
# the suite's own trims on top of the documented fast variant: no evaluation, 4 samples per prompt
TRIM = ["eval.suites=[]", "eval.at_start=false", "generate.max_response_tokens=16", "prefixes.samples_per_prompt=4"]
EXTRA = {"uft": ["prefixes.hybrids_per_prompt=4"]}  # UFT: every member of the group sees the hint (k = N)
METHODS = ["rft", "sft", "sft-then-rft", "rl-sft-loss", "luffy", "uft", "relift"]
REAL = [n for n in list_recipes() if n.startswith(("qwen", "llama"))]


def _run(name, tmp_path, *extra):
    cfg = load_config(name, FAST + TRIM + EXTRA.get(name, []) + list(extra))
    out = tmp_path / name
    train(cfg, out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return cfg, out, metrics


def _stage(out, step, stage):
    return load_from_disk(str(out / "steps" / f"{step:06d}" / stage / "data"))


def _stages(out, step):
    return sorted(p.name for p in (out / "steps" / f"{step:06d}").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_method_recipe_runs_two_steps(name, tmp_path, micro_path):
    cfg, out, metrics = _run(name, tmp_path)
    assert [m["step"] for m in metrics] == [1, 2]
    assert (out / "checkpoints" / "step-000002" / "config.json").is_file()
    for step in (1, 2):
        assert _stages(out, step) == sorted(step_stages(cfg, step))
        m = metrics[step - 1]
        assert m["grad_norm"] > 0 or m.get("sft_grad_norm", 0) > 0  # every step trained on something
    if name == "rft":
        assert not any(_stage(out, 1, "prefixes")[S.IS_HYBRID])
    if name == "sft":
        assert [m["phase"] for m in metrics] == ["sft", "sft"]
        assert metrics[0]["lr"] == methods.sft_lr(cfg, 1) and metrics[0]["nll_loss"] > 0
        assert len(_stage(out, 1, "prefixes")) == 2  # sft.batch_size demonstrations, nothing generated
    if name == "sft-then-rft":
        assert [m["phase"] for m in metrics] == ["sft", "rl"]
    if name in ("rl-sft-loss", "luffy"):
        gen = _stage(out, 1, "generate")
        demo = [r for r in gen if r[S.IS_DEMO]]
        assert len(demo) == 2 and all(r[S.FINISH_REASON] == "demo" and r[S.COMPLETION_IDS] == [] for r in demo)
        curated = load_from_disk(str(out / "curate" / "data"))
        demos = dict(zip(curated[S.ID], curated[S.DEMO_IDS]))
        for r in demo:  # the whole demonstration, then the end of turn, cut at L_max = 16
            full = demos[r[S.ID]] + end_of_turn_ids(_tokenizer(out))
            assert r[S.PREFIX_IDS] == full[:16]
    if name == "rl-sft-loss":
        assert metrics[0]["nll_loss"] > 0
    if name == "luffy":
        assert metrics[0]["nll_loss"] == 0 and metrics[0]["kept_prefix_tokens"] == metrics[0]["prefix_tokens"] > 0
    if name == "uft":
        rows = _stage(out, 1, "prefixes")
        assert all(r[S.IS_HYBRID] for r in rows) and metrics[0]["nll_loss"] >= 0
    if name == "relift":
        # buffer of 1 (fast variant): each step releases the oldest waiting 0-of-N prompt, if any
        failed = [replay.failed_prompts(_stage(out, s, "reward")) for s in (1, 2)]
        for s in (1, 2):
            expected, _ = replay.release(failed[:s], 1)
            assert _stage(out, s, "replay")[S.ID] == expected
            assert ("sft_nll_loss" in metrics[s - 1]) == bool(expected)


def _tokenizer(out):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(out / "checkpoints" / "step-000002")


@pytest.mark.slow
def test_sft_cosine_decay_is_the_learning_rate_each_step_trains_at(tmp_path, micro_path):
    # no warm-up, 3 steps on a cosine to 0: step 1 at lr x (1 + cos(pi/3)) / 2 = 0.75 lr, step 2 at 0.25 lr, step 3 at 0
    cfg, out, metrics = _run("sft", tmp_path, "sft.lr=1e-3", "sft.warmup_steps=0", "sft.decay=cosine",
                             "train.total_steps=3")
    assert [m["lr"] for m in metrics] == pytest.approx([7.5e-4, 2.5e-4, 0.0], abs=1e-12)
    assert [m["lr"] for m in metrics] == [methods.sft_lr(cfg, s) for s in (1, 2, 3)]


@pytest.mark.parametrize("name", REAL)
def test_real_model_recipe_loads_validates_and_resolves_offline(name):
    cfg = load_config(name)
    head = (RECIPE_DIR / f"{name}.yaml").read_text().split("\n")
    comments = "\n".join(line for line in head if line.startswith("#"))
    assert "accelerate launch" in comments and f"--config {name}" in comments and "eviation" in comments
    if name.startswith("qwen2.5-math-7b-"):
        assert "# deviates:" in comments or "# matches" in comments
    # a hub id resolves to itself: nothing is downloaded, and the fingerprint covers the load-time patches
    assert resolve_model_path(cfg.model) == cfg.model.name_or_path
    assert model_fingerprint(cfg.model.name_or_path, cfg.model)
    # the fast variant (the embedded micro model) validates too
    assert load_config(name, FAST).model.name_or_path == "embedded:micro"
    if cfg.sft.mode in ("off", "replay"):
        assert cfg.generate.max_response_tokens == 8192 and cfg.data.max_prompt_tokens == 1024  # docs/method.md §7


def test_qwen_math_7b_has_the_spec_7_hyper_parameters():
    c = load_config("qwen2.5-math-7b")
    # docs/method.md §7 table: context patch, 128 x 8 with 1 hybrid, cosine 0.95 -> 0.05 / 0.95, top 20 %, eps 0.2,
    # dual-clip 3, entropy 0.001, lr 1e-6, wd 0.01, grad clip 1, 2 PPO mini-batches, 500 steps
    assert (c.model.rope_theta, c.model.max_position_embeddings) == (40000, 16384)
    assert (c.prefixes.prompts_per_step, c.prefixes.samples_per_prompt, c.prefixes.hybrids_per_prompt) == (128, 8, 1)
    assert (c.prefixes.schedule, c.prefixes.low_start, c.prefixes.low_end, c.prefixes.high) == ("cosine", 0.95, 0.05, 0.95)
    assert (c.objective.gate, c.objective.keep_ratio, c.objective.advantage) == ("top", 0.2, "group")
    assert (c.objective.clip_low, c.objective.clip_high, c.objective.dual_clip) == (0.2, 0.2, 3.0)
    assert (c.objective.entropy_coef, c.objective.loss_agg) == (0.001, "constant")
    assert (c.update.lr, c.update.weight_decay, c.update.max_grad_norm, c.update.mini_batches) == (1e-6, 0.01, 1.0, 2)
    assert c.train.total_steps == 500 and c.schedule_horizon == 500
    assert load_config("llama-3.1-8b").model.chat_template_from == "meta-llama/Llama-3.1-8B-Instruct"
    assert load_config("qwen2.5-math-7b-luffy").objective.prefix_loss == "shaped"
    # docs/methods.md "Fidelity": the paper's gate pool, verl's entropy weighting, the reference's prompt text
    assert (c.objective.gate_scope, c.objective.entropy_norm) == ("step", "reference")
    assert c.data.instruction.endswith("\\boxed{}") and c.eval.protocol == "paper"
    for name in ("qwen2.5-math-7b-luffy", "qwen2.5-math-7b-rl-sft-loss", "qwen2.5-math-7b-sft-then-rft"):
        luffy = load_config(name)
        assert luffy.reward.kind == "luffy_v3" and luffy.data.system_prompt.startswith("Your task is to follow")
    assert load_config("qwen2.5-math-7b-sft-then-rft").objective.dual_clip == 0.0


def test_context_patch_is_applied_at_load(micro_path):
    from pipeline.config import ModelConfig

    plain = ModelConfig(name_or_path=str(micro_path))
    patched = ModelConfig(name_or_path=str(micro_path), rope_theta=40000.0, max_position_embeddings=16384)
    assert patched_config(str(micro_path), plain) is None and load_patches(plain) == {}
    conf = patched_config(str(micro_path), patched)
    theta = (getattr(conf, "rope_parameters", None) or {}).get("rope_theta", getattr(conf, "rope_theta", None))
    assert theta == 40000.0 and conf.max_position_embeddings == 16384
    # the rotary tables of the loaded model use the new base: head_dim 16, inv_freq[1] = theta^(-2/16):
    # 40000^(-0.125) = exp(-0.125 * 10.59663) = 0.265915 (unpatched: 10000^(-0.125) = 0.316228)
    assert float(load_model(str(micro_path), patched).model.rotary_emb.inv_freq[1]) == pytest.approx(0.265915, rel=1e-5)
    assert float(load_model(str(micro_path), plain).model.rotary_emb.inv_freq[1]) == pytest.approx(0.316228, rel=1e-5)
    # the patch is part of the starting weights' identity: caches of the unpatched model are not reused
    assert model_fingerprint(str(micro_path), plain) != model_fingerprint(str(micro_path), patched)


def test_hub_kernels_stay_off_unless_asked(micro_path):
    """transformers 5.2x swaps layers for kernels fetched from the hub by default, at the first `model.train()`
    on a GPU (offline: a ValueError mid-run, seen on an H200). The policy loads with them off."""
    from pipeline.config import ModelConfig

    cfg = ModelConfig(name_or_path=str(micro_path))
    assert cfg.hub_kernels is False
    model = load_model(str(micro_path), cfg)
    assert getattr(model, "use_kernels", False) is False
    model.train()  # no kernelization: nothing to fetch
    assert getattr(model, "kernels_mode", None) is None


@pytest.mark.parametrize("name", METHODS + REAL)
def test_dry_run_prints_the_resolved_recipe(name, capsys):
    from pipeline.train import main

    assert main(["--config", name, "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == to_dict(load_config(name)) and "inherit" not in printed
