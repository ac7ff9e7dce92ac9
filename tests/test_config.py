"""The job configuration: defaults, TOML, TOPX_* environment variables and options."""

import pytest

from batch.config import load_config
from batch.errors import ConfigError


def test_environment_variables_set_settings_and_unknown_ones_are_errors():
    cfg = load_config(env={"TOPX_TRAIN_HYPERPARAMETERS_NUM_FACTORS": "8", "TOPX_TOP": "7"})
    assert cfg.train.hyperparameters.num_factors == 8 and cfg.search.top == 7
    with pytest.raises(ConfigError, match="TOPX_TRAIN_NUM_FACTORS"):
        load_config(env={"TOPX_TRAIN_NUM_FACTORS": "8"})


def test_variables_other_tools_read_are_not_settings():
    cfg = load_config(env={"TOPX_ORACLE_CACHE": "/tmp/oracles", "TOPX_LOG_LEVEL": "DEBUG", "TOPX_RUN_ID": "r"})
    assert cfg == load_config(env={})
