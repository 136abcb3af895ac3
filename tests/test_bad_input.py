"""Bad-input corpus through the training CLI entry point (`pipeline.train.main`, what `prefix-rft train`
runs): each gives exit code 2 and exactly one stderr line `error: ...` naming the field or file, no
traceback, and leaves no stage folder marked complete."""

import pytest

from pipeline.train import main

Q = ["--config", "quickstart"]

RECIPES = {  # file name -> (YAML text, fragment of the error)
    "bad_yaml.yaml": ("train: {total_steps: 3\n", "not valid YAML"),
    "list.yaml": ("- a\n- b\n", "must be a mapping"),
    "unknown_section.yaml": ("trian:\n  total_steps: 3\n", "unknown key 'trian'"),
    "unknown_field.yaml": ("train:\n  total_stpes: 3\n", "unknown key 'total_stpes'"),
    "section_not_mapping.yaml": ("train: 3\n", "section 'train'"),
    "wrong_type.yaml": ("train:\n  total_steps: many\n", "train.total_steps must be an integer"),
    "inherit_missing.yaml": ("inherit: no_such_recipe\n", "no_such_recipe"),
}

OVERRIDES = [  # (override, fragment of the error)
    ("objective.keep_ratio=1.5", "objective.keep_ratio=1.5 is out of range"),
    ("objective.keep_ratio=-0.1", "objective.keep_ratio"),
    ("prefixes.samples_per_prompt=-4", "prefixes.samples_per_prompt"),
    ("prefixes.samples_per_prompt=0", "prefixes.samples_per_prompt"),
    ("prefixes.hybrids_per_prompt=9", "prefixes.hybrids_per_prompt=9"),
    ("prefixes.prompts_per_step=0", "prefixes.prompts_per_step"),
    ("train.total_steps=0", "train.total_steps"),
    ("train.total_steps=two", "train.total_steps must be an integer"),
    ("train.total_steps=1.5", "train.total_steps must be an integer"),
    ("update.lr=fast", "update.lr must be a number"),
    ("update.lr=-1", "update.lr"),
    ("generate.temperature=-1", "generate.temperature"),
    ("generate.top_p=1.5", "generate.top_p"),
    ("generate.max_response_tokens=0", "generate.max_response_tokens"),
    ("reward.timeout_s=0", "reward.timeout_s"),
    ("reward.num_workers=-1", "reward.num_workers"),
    ("data.source=gsm8k", "data.source"),
    ("objective.keep_rati=0.3", "did you mean 'keep_ratio'"),
    ("objectiv.keep_ratio=0.3", "objectiv"),
    ("keep_ratio=0.3", "must look like section.field"),
    ("objective.keep_ratio", "must look like section.field=value"),
    ("generate.backend=magic", "generate.backend"),
    ("data.toy.levels=3", "data.toy.levels must be a list"),
    ("reward.grade_after_think=maybe", "reward.grade_after_think must be true or false"),
]


def _expect_one_line_error(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and fragment in err[0] and "Traceback" not in err[0], err


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_bad_recipe_file(tmp_path, capsys, name):
    text, fragment = RECIPES[name]
    path = tmp_path / name
    path.write_text(text)
    _expect_one_line_error(capsys, ["--config", str(path), "--output-dir", str(tmp_path / "run")], fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, fragment", OVERRIDES)
def test_bad_override(tmp_path, capsys, override, fragment):
    _expect_one_line_error(capsys, Q + ["--output-dir", str(tmp_path / "run"), override], fragment)
    assert not (tmp_path / "run").exists()


def test_missing_config_file(tmp_path, capsys):
    _expect_one_line_error(capsys, ["--config", str(tmp_path / "nope.yaml"), "--output-dir", "x"], "nope.yaml")


def test_missing_output_dir(capsys):
    _expect_one_line_error(capsys, Q, "--output-dir is required")


def test_missing_model_path(tmp_path, capsys):
    out = tmp_path / "run"
    _expect_one_line_error(capsys, Q + ["--output-dir", str(out), f"model.name_or_path={tmp_path}/no_model"],
                           "no_model")
    assert not list(out.rglob("_COMPLETE"))


def test_output_dir_of_another_run(tmp_path, capsys, micro_path):
    from pipeline.config import dump_yaml, load_config

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(dump_yaml(load_config("quickstart", ["objective.keep_ratio=0.3"])))
    _expect_one_line_error(capsys, Q + ["--output-dir", str(out), "model.name_or_path=embedded:micro"],
                           "holds a run with another config")
    assert not list(out.rglob("_COMPLETE"))
