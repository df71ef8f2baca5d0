"""Device and precision choice: once, from Settings, never a hard-coded "cuda"."""

from __future__ import annotations

import pytest
import torch

from pipeline.device import pick_device, pick_precision
from pipeline.errors import ConfigError

CPU = torch.device("cpu")


def test_pick_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(ConfigError, match="not a torch device"):
            pick_device(bad)


def test_pick_precision_chooses_once_per_device() -> None:
    assert pick_precision("fp32", CPU) == torch.float32
    assert pick_precision("bf16", CPU) == torch.bfloat16
    assert pick_precision("auto", CPU) in (torch.float32, torch.bfloat16)
    with pytest.raises(ConfigError, match="needs a GPU"):
        pick_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="precision"):
        pick_precision("fp8", CPU)
