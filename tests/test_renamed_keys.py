"""Old flat config keys (before data.toy, data.decontam, generate.sglang and eval.validation were grouped)
still work everywhere a config is read, each with one warning naming the new key; old and new keys that
disagree are an error; the reference lists only the new names; stage fingerprints are unchanged."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from evaluation.run import validation_config
from pipeline import cache
from pipeline.config import (RENAMED, ConfigError, DataConfig, EvalConfig, GenerateConfig, apply_overrides,
                             config_from_dict, dump_yaml, fingerprint_view, load_config, reference_markdown, to_dict)
from pipeline.errors import UserError
from pipeline.run import Run
from stages import curate, generate

OLD_KEYS = ["data.toy_levels", "data.toy_problems_per_level", "data.toy_seed", "data.decontaminate",
            "data.eval_data_dir", "data.decontam_ngram", "data.decontam_threshold", "generate.engine_args",
            "generate.weight_sync", "generate.weight_bucket_mb", "generate.mem_fraction_static",
            "generate.server_urls", "generate.router_url", "generate.weight_group_address",
            "eval.validation_every", "eval.validation_problems", "eval.validation_suites"]
NEW_KEYS = ["data.toy.levels", "data.toy.problems_per_level", "data.toy.seed", "data.decontam.suites",
            "data.decontam.data_dir", "data.decontam.ngram", "data.decontam.threshold",
            "generate.sglang.engine_args", "generate.sglang.weight_sync", "generate.sglang.weight_bucket_mb",
            "generate.sglang.mem_fraction_static", "generate.sglang.server_urls", "generate.sglang.router_url",
            "generate.sglang.weight_group_address", "eval.validation.every", "eval.validation.problems",
            "eval.validation.suites"]


def _deprecations(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]


def test_the_table_is_the_documented_one():
    assert [".".join(k) for k in RENAMED] == OLD_KEYS
    assert [".".join(v) for v in RENAMED.values()] == NEW_KEYS
    doc = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    for old, new in zip(OLD_KEYS, NEW_KEYS):
        assert f"| `{old}` | `{new}` |" in doc


def test_reference_lists_only_the_new_names():
    ref = reference_markdown()
    for new in NEW_KEYS:
        assert f"| `{new}` |" in ref
    for old in OLD_KEYS:
        assert f"`{old}`" not in ref
    assert "| `data.toy.levels` | list | `[1, 2, 3, 4, 5, 6]` |" in ref
    assert "| `generate.sglang.mem_fraction_static` | float | `0.5` |" in ref
    assert "| `eval.validation.problems` | int | `60` |" in ref


def test_new_names_load_and_validate_with_dotted_messages(tmp_path):
    path = tmp_path / "new.yaml"
    path.write_text("inherit: quickstart\ndata:\n  toy: {levels: [1, 2], seed: 3}\n  decontam: {ngram: 16}\n"
                    "generate:\n  sglang: {weight_bucket_mb: 64, router_url: http://r}\n"
                    "eval:\n  validation: {every: 5, suites: [toy_val]}\n")
    cfg = load_config(str(path))
    assert (cfg.data.toy.levels, cfg.data.toy.problems_per_level, cfg.data.toy.seed) == ([1, 2], 2000, 3)
    assert (cfg.data.decontam.ngram, cfg.data.decontam.threshold, cfg.data.decontam.suites) == (16, 0.5,
                                                                                               ["math", "general"])
    assert (cfg.generate.sglang.weight_bucket_mb, cfg.generate.sglang.router_url) == (64.0, "http://r")
    assert (cfg.eval.validation.every, cfg.eval.validation.problems, cfg.eval.validation.suites) == (5, 60,
                                                                                                   ["toy_val"])
    for override, message in [("data.toy.levels=[]", "data.toy.levels: must name at least one level"),
                              ("data.toy.levels=[13]", r"data.toy.levels\[\]=13 is out of range"),
                              ("data.toy.problems_per_level=0", "data.toy.problems_per_level=0 is out of range"),
                              ("data.decontam.threshold=2", "data.decontam.threshold=2.0 is out of range"),
                              ("data.decontam.ngram=0", "data.decontam.ngram=0 is out of range"),
                              ("generate.sglang.mem_fraction_static=1", "generate.sglang.mem_fraction_static: "),
                              ("generate.sglang.weight_bucket_mb=0", "generate.sglang.weight_bucket_mb=0.0 is out"),
                              ("eval.validation.every=-1", "eval.validation.every=-1 is out of range"),
                              ("eval.validation.problems=0", "eval.validation.problems=0 is out of range"),
                              ("data.toy.level=[1]", "unknown key 'level'.*did you mean 'levels'")]:
        with pytest.raises(ConfigError, match=message):
            load_config("quickstart", [override])
    with pytest.raises(ConfigError, match="generate.sglang.server_urls: the sglang_server backend needs"):
        load_config("quickstart", ["generate.backend=sglang_server"])
    with pytest.raises(ConfigError, match="generate.sglang.weight_sync: `distributed` is for the sglang_server"):
        load_config("quickstart", ["generate.sglang.weight_sync=distributed"])


def test_old_keys_in_a_yaml_file_warn_once_each(tmp_path, caplog):
    path = tmp_path / "old.yaml"
    path.write_text("inherit: quickstart\ndata:\n  toy_levels: [1, 2]\n  toy_seed: 7\n  decontaminate: [math]\n"
                    "  eval_data_dir: data\n  decontam_threshold: 0.25\n"
                    "generate:\n  weight_bucket_mb: 64\n  engine_args: {tp_size: 2}\n"
                    "eval:\n  validation_every: 3\n  validation_suites: [toy_val]\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(str(path))
    assert cfg.data.toy.levels == [1, 2] and cfg.data.toy.seed == 7 and cfg.data.toy.problems_per_level == 2000
    assert cfg.data.decontam == type(cfg.data.decontam)(suites=["math"], data_dir="data", ngram=32, threshold=0.25)
    assert cfg.generate.sglang.weight_bucket_mb == 64.0 and cfg.generate.sglang.engine_args == {"tp_size": 2}
    assert (cfg.eval.validation.every, cfg.eval.validation.suites) == (3, ["toy_val"])
    assert _deprecations(caplog) == [
        f"{path}: config key data.toy_levels is deprecated; rename it to data.toy.levels",
        f"{path}: config key data.toy_seed is deprecated; rename it to data.toy.seed",
        f"{path}: config key data.decontaminate is deprecated; rename it to data.decontam.suites",
        f"{path}: config key data.eval_data_dir is deprecated; rename it to data.decontam.data_dir",
        f"{path}: config key data.decontam_threshold is deprecated; rename it to data.decontam.threshold",
        f"{path}: config key generate.engine_args is deprecated; rename it to generate.sglang.engine_args",
        f"{path}: config key generate.weight_bucket_mb is deprecated; rename it to generate.sglang.weight_bucket_mb",
        f"{path}: config key eval.validation_every is deprecated; rename it to eval.validation.every",
        f"{path}: config key eval.validation_suites is deprecated; rename it to eval.validation.suites",
    ]


def test_old_keys_in_overrides(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_config("quickstart", ["data.toy_levels=[5]", "generate.engine_args={tp_size: 2}",
                                         "eval.validation_problems=7"])
    assert cfg.data.toy.levels == [5] and cfg.data.toy.problems_per_level == 2000  # the recipe's, kept
    assert cfg.generate.sglang.engine_args == {"tp_size": 2}
    assert cfg.eval.validation.problems == 7
    assert _deprecations(caplog) == [
        "override 'data.toy_levels=[5]': config key data.toy_levels is deprecated; rename it to data.toy.levels",
        "override 'generate.engine_args={tp_size: 2}': config key generate.engine_args is deprecated; rename it to "
        "generate.sglang.engine_args",
        "override 'eval.validation_problems=7': config key eval.validation_problems is deprecated; rename it to "
        "eval.validation.problems",
    ]
    # an override, old or new, replaces what the recipe states under either name; the later one wins
    assert load_config("quickstart", ["data.toy.levels=[1]", "data.toy_levels=[6]"]).data.toy.levels == [6]
    with pytest.raises(ConfigError, match="data.toy.levels must be a list"):
        load_config("quickstart", ["data.toy_levels=3"])


def test_a_child_recipes_old_key_overrides_its_parents_new_key(tmp_path, caplog):
    (tmp_path / "parent.yaml").write_text("inherit: quickstart\ndata:\n  toy:\n    levels: [2, 3]\n"
                                          "    problems_per_level: 50\n")
    (tmp_path / "child.yaml").write_text(f"inherit: {tmp_path / 'parent.yaml'}\ndata:\n  toy_levels: [4]\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    assert cfg.data.toy.levels == [4] and cfg.data.toy.problems_per_level == 50  # the parent's other field kept
    # and the other way round: a parent's old key, the child's new one
    (tmp_path / "old_parent.yaml").write_text("data:\n  toy_levels: [2, 3]\n  toy_problems_per_level: 50\n"
                                              "eval:\n  validation_every: 4\n")
    (tmp_path / "new_child.yaml").write_text(f"inherit: {tmp_path / 'old_parent.yaml'}\n"
                                             "data:\n  toy: {levels: [6]}\neval:\n  validation: {problems: 9}\n")
    cfg = load_config(str(tmp_path / "new_child.yaml"))
    assert (cfg.data.toy.levels, cfg.data.toy.problems_per_level) == ([6], 50)
    assert (cfg.eval.validation.every, cfg.eval.validation.problems) == (4, 9)
    # a child of the shipped quickstart (data.toy.levels [2, 3, 4]) with the old key
    (tmp_path / "qs_child.yaml").write_text("inherit: quickstart\ndata:\n  toy_levels: [1]\n")
    assert load_config(str(tmp_path / "qs_child.yaml")).data.toy.levels == [1]


def test_old_and_new_key_in_one_mapping(tmp_path, caplog):
    path = tmp_path / "both.yaml"
    path.write_text("data:\n  toy_levels: [1]\n  toy:\n    levels: [2]\n")
    with pytest.raises(ConfigError, match=rf"{path}: both data.toy_levels \(deprecated\) and data.toy.levels are "
                                          r"given, with different values \[1\] and \[2\]; keep only data.toy.levels"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="both generate.server_urls .* and generate.sglang.server_urls"):
        config_from_dict({"generate": {"server_urls": ["http://a"], "sglang": {"server_urls": ["http://b"]}}})
    with pytest.raises(ConfigError, match="data.toy must be a mapping"):
        config_from_dict({"data": {"toy_levels": [1], "toy": 3}})
    path.write_text("data:\n  toy_levels: [1]\n  toy:\n    levels: [1]\n")  # the same value: accepted, warned
    with caplog.at_level(logging.WARNING):
        assert load_config(str(path)).data.toy.levels == [1]
    assert len(_deprecations(caplog)) == 1


def test_config_from_dict_and_apply_overrides_take_old_keys(caplog):
    raw = {"data": {"toy_problems_per_level": 9}, "eval": {"validation_suites": ["toy_val"]}}
    with caplog.at_level(logging.WARNING):
        cfg = config_from_dict(raw, "my dict")
    assert cfg.data.toy.problems_per_level == 9 and cfg.eval.validation.suites == ["toy_val"]
    assert raw == {"data": {"toy_problems_per_level": 9}, "eval": {"validation_suites": ["toy_val"]}}  # untouched
    assert _deprecations(caplog)[0] == ("my dict: config key data.toy_problems_per_level is deprecated; rename it "
                                        "to data.toy.problems_per_level")
    out = apply_overrides(raw, ["data.toy.problems_per_level=11"])
    assert out == {"data": {"toy": {"problems_per_level": 11}}, "eval": {"validation": {"suites": ["toy_val"]}}}
    assert config_from_dict(out).data.toy.problems_per_level == 11


def _old_layout(cfg) -> dict:
    """The config.yaml a run wrote before the keys were grouped, written out field by field."""
    d = to_dict(cfg)
    toy, dec, sg, val = d["data"].pop("toy"), d["data"].pop("decontam"), d["generate"].pop("sglang"), \
        d["eval"].pop("validation")
    d["data"].update(toy_levels=toy["levels"], toy_problems_per_level=toy["problems_per_level"],
                     toy_seed=toy["seed"], decontaminate=dec["suites"], eval_data_dir=dec["data_dir"],
                     decontam_ngram=dec["ngram"], decontam_threshold=dec["threshold"])
    d["generate"].update(engine_args=sg["engine_args"], weight_sync=sg["weight_sync"],
                         weight_bucket_mb=sg["weight_bucket_mb"], mem_fraction_static=sg["mem_fraction_static"],
                         server_urls=sg["server_urls"], router_url=sg["router_url"],
                         weight_group_address=sg["weight_group_address"])
    d["eval"].update(validation_every=val["every"], validation_problems=val["problems"],
                     validation_suites=val["suites"])
    return d


def test_a_saved_run_config_with_old_keys_still_loads_and_resumes(tmp_path):
    cfg = load_config("quickstart", ["eval.validation.every=2", "data.toy.seed=1"])
    out = tmp_path / "run"
    out.mkdir()
    saved = yaml.safe_dump(_old_layout(cfg), sort_keys=False)
    assert "\n  toy_seed: 1\n" in saved and "\n  validation_every: 2\n" in saved and "\n  toy:" not in saved
    (out / "config.yaml").write_text(saved)
    assert load_config(str(out / "config.yaml")) == cfg  # what `python -m pipeline.stage` reads
    acc = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    Run.prepare_output_dir(SimpleNamespace(out=out, cfg=cfg, acc=acc))  # the same run: no error
    assert (out / "config.yaml").read_text() == saved  # left as it was
    other = load_config("quickstart", ["eval.validation.every=3", "data.toy.seed=1"])
    with pytest.raises(UserError, match=r"holds a run with another config \(eval.validation.every: 2 -> 3\)"):
        Run.prepare_output_dir(SimpleNamespace(out=out, cfg=other, acc=acc))
    (out / "config.yaml").write_text(dump_yaml(cfg))
    Run.prepare_output_dir(SimpleNamespace(out=out, cfg=cfg, acc=acc))


def test_stage_fingerprints_hash_the_old_flat_layout():
    data = fingerprint_view("data", DataConfig())
    assert "toy" not in data and "decontam" not in data
    assert {k: data[k] for k in ("toy_levels", "toy_problems_per_level", "toy_seed", "decontaminate",
                                 "eval_data_dir", "decontam_ngram", "decontam_threshold")} == {
        "toy_levels": [1, 2, 3, 4, 5, 6], "toy_problems_per_level": 2000, "toy_seed": 0,
        "decontaminate": ["math", "general"], "eval_data_dir": None, "decontam_ngram": 32, "decontam_threshold": 0.5}
    gen = fingerprint_view("generate", GenerateConfig())
    assert "sglang" not in gen and gen["weight_bucket_mb"] == 512.0 and gen["server_urls"] == []
    ev = fingerprint_view("eval", EvalConfig())
    assert "validation" not in ev and (ev["validation_every"], ev["validation_problems"], ev["validation_suites"]) \
        == (0, 60, [])
    # fingerprints of quickstart computed on the code before the grouping (8d3c4ef)
    cfg = load_config("quickstart")
    assert cache.fingerprint(*curate.config_slice(cfg, 0)) == "53aa48069d685abd"
    assert cache.fingerprint(*generate.config_slice(cfg, 1)) == "5af2a2d6fd652b1d"
    assert cache.fingerprint(fingerprint_view("eval", cfg.eval)) == "4d1cf0a707925ce9"
    assert cache.fingerprint(fingerprint_view("eval", validation_config(cfg.eval))) == "4eb09b20deebb3bf"
    cfg = load_config("quickstart", ["eval.validation.every=3", "eval.validation.suites=[toy_val]",
                                     "data.toy.seed=4", "data.decontam.ngram=16",
                                     "generate.sglang.weight_bucket_mb=64", "generate.sglang.engine_args={tp_size: 2}"])
    assert cache.fingerprint(*curate.config_slice(cfg, 0)) == "6b8e298c1d6b1b72"
    assert cache.fingerprint(*generate.config_slice(cfg, 1)) == "656955bd7c23c2f3"
    assert cache.fingerprint(fingerprint_view("eval", cfg.eval)) == "3ba2e2c2c4568c1a"
    assert cache.fingerprint(fingerprint_view("eval", validation_config(cfg.eval))) == "22bc46c97408128b"
