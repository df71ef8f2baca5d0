"""Settings: environment parsing and validation of the knobs added beside the defaults."""

from __future__ import annotations

import pytest

from pipeline.config import DEFAULT_THRESHOLD, Settings
from pipeline.errors import ConfigError
from pipeline.models import SEED_PROFILE
from pipeline.types import ModelInfo

MODEL = ModelInfo("m.pth", "ab" * 32, SEED_PROFILE, "cpu", untrained=False)


def test_threshold_and_precision_from_the_environment():
    s = Settings.from_env({"DFF_THRESHOLD": "0.7", "DFF_PRECISION": "fp32"})
    assert s.threshold == 0.7 and s.precision == "fp32"
    assert Settings.from_env({}).threshold is None and Settings.from_env({}).precision == "auto"
    with pytest.raises(ConfigError, match="precision"):
        Settings.from_env({"DFF_PRECISION": "int8"})
    with pytest.raises(ConfigError, match="threshold"):
        Settings.from_env({"DFF_THRESHOLD": "1.5"})


def test_operating_threshold_order():
    card = ModelInfo("m.pth", "ab" * 32, SEED_PROFILE, "cpu", untrained=False, calibrated_threshold=0.8)
    assert Settings().operating_threshold(MODEL) == (DEFAULT_THRESHOLD, "default")
    assert Settings().operating_threshold(card) == (0.8, "model card")
    assert Settings(threshold=0.3).operating_threshold(card) == (0.3, "settings")
    assert Settings(threshold=0.3).operating_threshold(card, 0.45) == (0.45, "request")


def test_cross_job_batching_settings_from_the_environment():
    s = Settings.from_env({"DFF_RAY_SHARED_BATCHES": "off", "DFF_RAY_GATHER_MS": "40"})
    assert s.ray_shared_batches == "off" and s.ray_gather_ms == 40.0
    assert Settings.from_env({}).ray_shared_batches == "auto"
    with pytest.raises(ConfigError, match="ray_shared_batches"):
        Settings.from_env({"DFF_RAY_SHARED_BATCHES": "yes"})
    with pytest.raises(ConfigError, match="ray_gather_ms"):
        Settings.from_env({"DFF_RAY_GATHER_MS": "-1"})
