"""The job configuration: defaults, TOML, TOPX_* environment variables and options."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from batch import config
from batch.config import describe, env_names, load_config, settings, settings_reference
from batch.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_environment_variables_set_settings_and_unknown_ones_are_errors():
    cfg = load_config(env={"TOPX_TRAIN_HYPERPARAMETERS_NUM_FACTORS": "8", "TOPX_TOP": "7"})
    assert cfg.train.hyperparameters.num_factors == 8 and cfg.search.top == 7
    with pytest.raises(ConfigError, match="TOPX_TRAIN_NUM_FACTORS"):
        load_config(env={"TOPX_TRAIN_NUM_FACTORS": "8"})


def test_variables_other_tools_read_are_not_settings():
    cfg = load_config(env={"TOPX_ORACLE_CACHE": "/tmp/oracles", "TOPX_LOG_LEVEL": "DEBUG", "TOPX_RUN_ID": "r"})
    assert cfg == load_config(env={})


def test_every_setting_and_section_has_its_one_description():
    keys = list(settings())
    assert ("train.ials.reg", False) in keys and ("publish.gate", True) in keys
    assert not [key for key, _ in keys if not describe(key)[0]], "settings without setting(doc=...)"
    assert {"_".join(["TOPX", *key.split(".")]).upper() for key, section in keys if not section} <= set(env_names())


def test_config_class_docstrings_do_not_describe_their_own_fields_again():
    classes = {config.JobConfig}
    for key, section in settings():
        cls = config.JobConfig
        for part in key.split(".") if section else ():
            cls = typing.get_type_hints(cls)[part]
        classes.add(cls)
    assert len(classes) == 17  # the job and its 16 sections
    for cls in classes:
        doc = cls.__doc__ or ""
        named = [f.name for f in dataclasses.fields(cls) if f"``{f.name}``" in doc]
        assert not named, f"{cls.__name__}'s docstring describes {named}: describe them in setting(doc=...)"


def test_the_readme_lists_every_setting_as_the_config_describes_it():
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- settings: [^>]*-->\n(.*?)<!-- /settings -->", text, re.S)
    assert found, "README.md has no generated settings table"
    assert found.group(1) == settings_reference(), (
        "README.md's settings table is stale: replace it with the output of "
        "python -c 'from batch.config import settings_reference; print(settings_reference(), end=\"\")'")
