"""``dff train``: fine-tune (or train from scratch) the one-logit InceptionResnetV1 on labelled face folders
and/or self-blended pseudo-fakes, validate on held-out source files, checkpoint every epoch with a card.

Loss: BCE on the single logit. Optimiser: AdamW with linear warm-up then cosine decay, per step. Mixed
precision only on CUDA (bf16 where supported, else fp16 with a grad scaler); CPU stays fp32. Randomness is
re-seeded from (seed, epoch) at every epoch start, so a resumed run repeats the epoch it restarts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.classify import preprocess
from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.device import pick_device
from pipeline.errors import ConfigError
from pipeline.models import (
    SEED_PROFILE,
    build_model,
    card_path,
    load_for_training,
    read_training_state,
    save_checkpoint,
)
from pipeline.train.augment import AugmentConfig
from pipeline.train.card import new_card, write_card
from pipeline.train.data import FAKE, REAL, FaceSample, load_faces, split_by_source
from pipeline.train.examples import Unit, batches_of, make_batch, validation_set
from pipeline.train.metrics import roc_auc
from pipeline.types import PreprocessProfile, SampleMode, SamplingPolicy

TRAINABLE = {  # top-level InceptionResnetV1 children trained under each choice
    "head": ("last_linear", "last_bn", "logits"),
    "top": ("mixed_7a", "repeat_3", "block8", "last_linear", "last_bn", "logits"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``dff train`` can be told. Paths are folders of images/videos; lr in AdamW units."""

    out: Path
    real_dirs: tuple[Path, ...]
    fake_dirs: tuple[Path, ...] = ()
    self_blend: bool = False
    init: Path | None = None  # seed-format/our checkpoint or facenet backbone file; None = random weights
    resume: bool = False  # continue from ``out``'s last checkpoint
    name: str | None = None  # the card's name; default: the out file's stem
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    val_fraction: float = 0.2
    input_px: int | None = None  # model input size; None = the init checkpoint's (seed: 256)
    trainable: str = "all"  # all | top | head
    every_s: float = 0.5  # video sampling for training faces
    max_frames: int = 60  # per video
    max_steps: int | None = None
    time_budget_s: float | None = None  # wall time of the whole run, face extraction included
    augment: bool = True
    seed: int = 0
    cache_dir: Path | None = None  # None = Settings.data_dir / "face_cache"

    def __post_init__(self) -> None:
        if not self.real_dirs:
            raise ConfigError("training needs real faces: give --real DIR")
        if not self.fake_dirs and not self.self_blend:
            raise ConfigError("no fakes to learn from: give --fake DIR, or --self-blend to make them from real faces")
        if self.trainable not in ("all", *TRAINABLE):
            raise ConfigError(f"trainable must be all, top or head, got {self.trainable!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ConfigError(
                f"need epochs >= 1, batch_size >= 2, lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}"
            )
        if self.input_px is not None and self.input_px < 80:
            raise ConfigError(f"input_px must be >= 80 (InceptionResnetV1's smallest input), got {self.input_px}")


@dataclass
class TrainResult:
    checkpoint: Path
    card: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = "completed"
    n_train: int = 0
    n_val: int = 0


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    pos_weight: float = 1.0,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """One optimiser step of BCE on the single logit; returns the loss (nats per sample)."""
    autocast = (
        torch.autocast(device_type=x.device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        logits = model(x)[:, 0]
    loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=torch.tensor(pos_weight, device=y.device))
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def score_crops(
    model: torch.nn.Module,
    crops: Sequence[np.ndarray],
    profile: PreprocessProfile,
    device: torch.device,
    batch: int = 32,
) -> np.ndarray:
    """P(fake) per crop (float64, N), model in eval mode; the caller restores train mode."""
    model.eval()
    out = [
        torch.sigmoid(model(preprocess(crops[i : i + batch], profile, device))[:, 0].float()).cpu().numpy()
        for i in range(0, len(crops), batch)
    ]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def set_trainable(model: torch.nn.Module, trainable: str) -> list[torch.nn.Parameter]:
    """Freeze what ``trainable`` excludes; returns the parameters left to train."""
    keep = None if trainable == "all" else set(TRAINABLE[trainable])
    for name, child in model.named_children():
        child.requires_grad_(keep is None or name in keep)
    return [p for p in model.parameters() if p.requires_grad]


def train_mode(model: torch.nn.Module, trainable: str) -> None:
    """Train mode, except frozen children stay in eval so their BatchNorm statistics do not drift."""
    model.train()
    if trainable != "all":
        for name, child in model.named_children():
            if name not in TRAINABLE[trainable]:
                child.eval()


def lr_at(step: int, total: int, base: float, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup_frac`` of ``total`` steps, then cosine decay to 0 at ``total``."""
    warm = max(1, round(warmup_frac * total))
    if step < warm:
        return base * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(cfg: TrainConfig, settings: Settings, err: TextIO, *, show_bar: bool = True) -> TrainResult:
    """Run training as configured; prints one line per epoch (and a tqdm bar) to ``err``."""
    from tqdm import tqdm

    started = time.perf_counter()
    device = pick_device(settings.device)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    state: dict[str, Any] = {}
    if cfg.resume:
        state = read_training_state(cfg.out)
        model, profile = load_for_training(cfg.out)
        init_desc = (state.get("train_state") or {}).get("init", "resumed")
    elif cfg.init is not None:
        model, profile = load_for_training(cfg.init)
        init_desc = f"checkpoint {Path(cfg.init).name}"
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model()
        profile, init_desc = SEED_PROFILE, f"random weights (seed {cfg.seed})"
    if cfg.input_px is not None and cfg.input_px != profile.input_px and not cfg.resume:
        profile = dataclasses.replace(profile, name=f"{profile.name}-in{cfg.input_px}", input_px=cfg.input_px)
    model = model.to(device)

    policy = SamplingPolicy(SampleMode.EVERY_S, every_s=cfg.every_s, max_frames=cfg.max_frames)
    folders = [(Path(d), REAL) for d in cfg.real_dirs] + [(Path(d), FAKE) for d in cfg.fake_dirs]

    def detector() -> FaceDetector:
        return FaceDetector(
            device,
            min_face_px=settings.video_min_face_px,
            prob_floor=settings.detect_prob_floor,
            max_side_px=settings.detect_max_side_px,
        )

    print(f"dff train: finding faces in {len(folders)} folder(s) (cached after the first run)", file=err)
    cache_dir = cfg.cache_dir if cfg.cache_dir is not None else settings.data_dir / "face_cache"
    faces, files = load_faces(
        folders, settings, policy, profile, cache_dir, detector, progress=lambda line: print(f"  {line}", file=err)
    )
    train_faces, val_faces = split_by_source(faces, cfg.val_fraction, cfg.seed)
    if not any(f.label == REAL for f in train_faces):
        raise ConfigError("no real faces were found for training (MTCNN found none in --real)")
    if not cfg.self_blend and not any(f.label == FAKE for f in train_faces):
        raise ConfigError("no fake faces were found for training (MTCNN found none in --fake)")
    val_crops, val_labels = validation_set(val_faces, profile, cfg.seed, cfg.self_blend)
    can_validate = len(set(val_labels.tolist())) == 2

    units: list[Unit] = [(f, cfg.self_blend and f.label == REAL) for f in train_faces]
    n_pos = sum(u[0].label == FAKE for u in units) + sum(u[1] for u in units)
    n_neg = sum(u[0].label == REAL for u in units)
    pos_weight = n_neg / n_pos if n_pos else 1.0  # balance the classes in the loss, not by resampling
    steps_per_epoch = len(batches_of(units, cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        # the schedule spans the steps that will run, so a short run still decays its learning rate
        total_steps = min(total_steps, cfg.max_steps)

    params = set_trainable(model, cfg.trainable)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp_dtype = None
    scaler = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    train_state = dict(state.get("train_state") or {})
    history: list[dict[str, Any]] = list(train_state.get("history", []))
    start_epoch, step = int(train_state.get("epoch", 0)), int(train_state.get("step", 0))
    if cfg.resume and "optimizer_state_dict" in state:
        try:
            optimizer.load_state_dict(state["optimizer_state_dict"])
        except ValueError:
            was = train_state.get("trainable", "?")
            raise ConfigError(f"resume with the same --trainable as the run being resumed ({was})") from None
    augment_cfg = AugmentConfig() if cfg.augment else None

    data_desc = {
        "real": [str(d) for d in cfg.real_dirs],
        "fake": [str(d) for d in cfg.fake_dirs],
        "self_blend": cfg.self_blend,
        "files": {
            "real": sum(f.label == REAL for f in files),
            "fake": sum(f.label == FAKE for f in files),
            "unreadable": [f.path.name for f in files if f.error],
        },
        "faces": {"train": _count_labels(train_faces), "validation": _count_labels(val_faces)},
        "validation_files": sorted({f.name for f in val_faces}),
        "sampling": f"videos: one frame every {cfg.every_s} s, at most {cfg.max_frames} frames; photos: the image",
        "split": f"by source file (content SHA-256), about {cfg.val_fraction:.0%} of faces held out, seed {cfg.seed}",
    }
    print(
        f"dff train: {len(train_faces)} training faces, {len(val_faces)} validation faces "
        f"({len(val_crops)} validation crops); {steps_per_epoch} steps/epoch, {total_steps} steps in all, on {device}",
        file=err,
    )
    if not can_validate:
        print("dff train: validation needs both classes from held-out files; validation AUC will be n/a", file=err)

    if start_epoch >= cfg.epochs:
        print(f"dff train: {cfg.out} has already trained {start_epoch} epochs; raise --epochs to go on", file=err)
        return TrainResult(cfg.out, card_path(cfg.out), history, "completed", len(train_faces), len(val_faces))
    stopped = "completed"
    n_parameters = sum(p.numel() for p in model.parameters())
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 1000 + epoch)
        batches = batches_of([units[i] for i in rng.permutation(len(units))], cfg.batch_size)
        train_mode(model, cfg.trainable)
        losses: list[float] = []
        t0 = time.perf_counter()
        bar = tqdm(
            batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", file=err, leave=False, disable=not show_bar
        )
        for batch in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, cfg.lr, cfg.warmup_frac)
            x, y = make_batch(batch, profile, rng, device, augment_cfg)
            losses.append(train_step(model, optimizer, x, y, pos_weight=pos_weight, scaler=scaler, amp_dtype=amp_dtype))
            step += 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
            if step >= total_steps and cfg.max_steps is not None and step < cfg.epochs * steps_per_epoch:
                stopped = "max steps"
                break
            if cfg.time_budget_s is not None and time.perf_counter() - started > cfg.time_budget_s:
                stopped = "time budget"
                break
        bar.close()
        complete = len(losses) == len(batches)
        val_auc = roc_auc(val_labels, score_crops(model, val_crops, profile, device)) if can_validate else None
        history.append(
            {
                "epoch": epoch + 1,
                "complete": complete,
                "steps": len(losses),
                "loss": float(np.mean(losses)) if losses else None,
                "val_auc": val_auc,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        train_state = {
            "epoch": epoch + 1 if complete else epoch,
            "step": step,
            "history": history,
            "init": init_desc,
            "trainable": cfg.trainable,
            "seed": cfg.seed,
        }
        model.eval()
        save_checkpoint(
            model,
            cfg.out,
            profile,
            epoch=train_state["epoch"],
            optimizer_state_dict=optimizer.state_dict(),
            train_state=train_state,
        )
        training = {
            "init": init_desc,
            "data": data_desc,
            "history": history,
            "device": str(device),
            "steps": step,
            "stopped": stopped,
            "wall_s": round(time.perf_counter() - started, 1),
            "config": _plain_config(cfg),
        }
        write_card(cfg.out, new_card(cfg.out, cfg.name or Path(cfg.out).stem, profile, training, n_parameters))
        auc_text = f"{val_auc:.3f}" if val_auc is not None else "n/a"
        loss_text = f"{history[-1]['loss']:.4f}" if losses else "n/a"
        print(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_text}, validation AUC {auc_text}, "
            f"{time.perf_counter() - t0:.0f} s{'' if complete else ' (partial: ' + stopped + ')'}; saved {cfg.out}",
            file=err,
        )
        if stopped != "completed":
            break
    return TrainResult(cfg.out, card_path(cfg.out), history, stopped, len(train_faces), len(val_faces))


def _count_labels(faces: Sequence[FaceSample]) -> dict[str, int]:
    return {"real": sum(f.label == REAL for f in faces), "fake": sum(f.label == FAKE for f in faces)}


def _plain_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as JSON types (paths as strings) for the model card."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [str(v) for v in value]
        out[key] = value
    return out
