"""The bench's checkpoint: random InceptionResnetV1 weights whose outputs still depend on the input.

Plain random init gives almost the same logit for every face; calibrating the BatchNorm statistics on a
batch of noise (as tests/weights.py does) makes scores and CAMs input-dependent, so the benchmark does the
same arithmetic a trained model would. Saved in the seed format (``{"model_state_dict": ...}``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.models import build_model, save_checkpoint


def calibrated_model(seed: int = 0) -> torch.nn.Module:
    """InceptionResnetV1(classify=True, num_classes=1) in eval mode, BN statistics from one noise batch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model()
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # cumulative average: one batch sets the statistics
                module.reset_running_stats()
        model.train()
        with torch.no_grad():
            model(torch.rand(8, 3, 96, 96))
    return model.eval()


def calibrated_checkpoint(cache_dir: Path) -> Path:
    """``cache_dir/bench-calibrated.pth`` (written once; ~110 MB)."""
    path = cache_dir / "bench-calibrated.pth"
    if not path.is_file():
        tmp = path.with_suffix(".part")
        save_checkpoint(calibrated_model(), tmp)
        tmp.replace(path)
    return path
