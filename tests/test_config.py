"""Typed config: recipes, overrides, validation messages that name the field."""

import pytest

from pipeline.config import (Config, ConfigError, PrefixConfig, apply_overrides, config_from_dict, dump_yaml,
                             field_docs, list_recipes, load_config, reference_markdown)


def test_quickstart_loads_and_overrides_are_typed():
    cfg = load_config("quickstart", ["train.total_steps=7", "update.lr=1e-5", "objective.gate=bottom",
                                     "data.toy.levels=[1,2]", "model.revision=null"])
    assert cfg.train.total_steps == 7 and isinstance(cfg.train.total_steps, int)
    assert cfg.update.lr == 1e-5 and isinstance(cfg.update.lr, float)  # "1e-5" is a str to YAML 1.1
    assert cfg.objective.gate == "bottom" and cfg.data.toy.levels == [1, 2] and cfg.model.revision is None
    assert cfg.schedule_horizon == 7


def test_every_shipped_recipe_loads():
    for name in list_recipes():
        assert isinstance(load_config(name), Config)


@pytest.mark.parametrize("override, message", [
    (["objective.keep_ratio=1.5"], r"objective.keep_ratio=1.5 is out of range"),
    (["prefixes.samples_per_prompt=-8"], r"prefixes.samples_per_prompt=-8 is out of range"),
    (["prefixes.hybrids_per_prompt=9"], r"prefixes.hybrids_per_prompt=9 is out of range: must be in \[0, 8\]"),
    (["objective.gate=topp"], r"objective.gate='topp' is not allowed; choose one of 'top', 'bottom'"),
    (["train.total_steps=ten"], r"train.total_steps must be an integer"),
    (["train.total_steps=2.5"], r"train.total_steps must be an integer"),
    (["update.lr=fast"], r"update.lr must be a number"),
    (["model.trust_remote_code=maybe"], r"model.trust_remote_code must be true or false"),
    (["objective.keep_rati=0.3"], r"unknown key 'keep_rati' .* did you mean 'keep_ratio'"),
    (["objectiv.keep_ratio=0.3"], r"unknown key 'objectiv' .* did you mean 'objective'"),
    (["keep_ratio=0.3"], r"must look like section.field"),
    (["objective.keep_ratio"], r"must look like section.field=value"),
    (["update.mini_batches=3"], r"update.mini_batches: must divide"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", override)


def test_unknown_recipe_and_missing_file():
    with pytest.raises(ConfigError, match="no recipe named 'quikstart'; did you mean 'quickstart'"):
        load_config("quikstart")
    with pytest.raises(ConfigError, match="config file /nope/x.yaml does not exist"):
        load_config("/nope/x.yaml")


def test_recipe_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prefixes:\n  samples_per_prompt: 8\n  hybrid_per_prompt: 1\n")
    with pytest.raises(ConfigError, match=rf"unknown key 'hybrid_per_prompt' in section 'prefixes' of {bad}"):
        load_config(str(bad))
    bad.write_text("prefixes: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{bad}: not valid YAML"):
        load_config(str(bad))


def test_inherit_merges_sections(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("inherit: quickstart\nobjective:\n  gate: random\ntrain:\n  total_steps: 3\n")
    cfg = load_config(str(child))
    base = load_config("quickstart")
    assert cfg.objective.gate == "random" and cfg.train.total_steps == 3
    assert cfg.train.seed == base.train.seed and cfg.prefixes == base.prefixes


def test_a_bare_section_in_a_child_keeps_the_parents(tmp_path):
    # `update:` with nothing under it is YAML null: it changes nothing (it used to wipe the parent's section)
    child = tmp_path / "child.yaml"
    child.write_text("inherit: compare_toy\nupdate:\ndata:\n  toy:\n")
    cfg, base = load_config(str(child)), load_config("compare_toy")
    assert cfg.update.micro_batch_tokens == base.update.micro_batch_tokens == 12288
    assert cfg.data.toy.levels == base.data.toy.levels == [2, 3, 4, 5, 6]


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config("quickstart", ["train.seed=5"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(str(path)) == cfg


def test_validation_runs_on_direct_construction():
    with pytest.raises(ConfigError, match="prefixes.high"):
        PrefixConfig(low_start=0.9, high=0.5)
    with pytest.raises(ConfigError):
        config_from_dict({"train": {"total_steps": 0}})


def test_every_field_is_documented_once():
    import typing

    from pipeline.config import (SECTIONS, DecontamConfig, LoraConfig, SGLangConfig, ToyConfig,
                                 ValidationConfig)

    for cls in [*SECTIONS.values(), LoraConfig, ToyConfig, DecontamConfig, SGLangConfig, ValidationConfig]:
        docs = field_docs(cls)
        assert set(docs) == set(typing.get_type_hints(cls)), cls.__name__
    assert "`objective.keep_ratio`" in reference_markdown()


def test_apply_overrides_does_not_mutate_input():
    raw = {"train": {"seed": 1}}
    apply_overrides(raw, ["train.seed=2"])
    assert raw == {"train": {"seed": 1}}


def test_docs_config_reference_is_current():
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    assert reference_markdown() in doc, "regenerate docs/config.md with `python -m pipeline.config`"


def test_nested_lora_section_overrides_and_errors():
    cfg = load_config("quickstart", ["update.lora.rank=8", "update.lora.targets=q_proj,v_proj"])
    assert cfg.update.lora.rank == 8 and cfg.update.lora.targets == ["q_proj", "v_proj"]
    assert load_config("quickstart").update.lora.rank == 0  # off by default
    with pytest.raises(ConfigError, match="unknown key 'rnak'.*did you mean 'rank'"):
        load_config("quickstart", ["update.lora.rnak=8"])
    with pytest.raises(ConfigError, match="update.lora.dropout=1.5 is out of range"):
        load_config("quickstart", ["update.lora.dropout=1.5"])
    assert "| `update.lora.rank` | int | `0` |" in reference_markdown()


def test_nested_sections_merge_through_inherit_and_overrides(tmp_path):
    (tmp_path / "child.yaml").write_text("inherit: lora_quickstart\nupdate:\n  lora:\n    rank: 4\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    assert (cfg.update.lora.rank, cfg.update.lora.alpha, cfg.update.lr) == (4, 32.0, 1e-3)  # alpha, lr inherited
    raw = {"update": {"lora": {"rank": 2}}}
    assert apply_overrides(raw, ["update.lora.rank=3"])["update"]["lora"]["rank"] == 3
    assert raw == {"update": {"lora": {"rank": 2}}}  # input untouched


def test_plateau_rule_by_hand():
    from pipeline.summary import plateaued, validation_points

    pts = validation_points([{"step": 1, "val_a_accuracy": 0.2, "val_b_accuracy": 0.4}, {"step": 2},
                             {"step": 3, "val_a_accuracy": 0.5, "val_b_accuracy": 0.1},
                             {"step": 4, "val_a_accuracy": 0.1, "val_b_accuracy": 0.5}])
    assert pts == [(1, pytest.approx(0.3)), (3, pytest.approx(0.3)), (4, pytest.approx(0.3))]
    assert plateaued(pts, 2)  # 0.3 and 0.3 do not beat 0.3: ties are no improvement
    assert not plateaued(pts, 3)  # too few points before the last three
    assert not plateaued(pts, 0)  # 0: never stops
    assert not plateaued([(1, 0.1), (2, 0.3), (3, 0.2)], 2)  # step 2 beat step 1
    assert plateaued([(1, 0.1), (2, 0.3), (3, 0.2), (4, 0.25)], 2)  # 0.2, 0.25 <= 0.3
