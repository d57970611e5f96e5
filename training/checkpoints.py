"""Resumable training checkpoints: one folder per optimizer step, written atomically.

`<dir>/step-NNNNNNNN/` holds the weights (safetensors), the optimizer, schedule and RNG state
and the metric history (state.pt), and meta.json (format, step, config, metrics, the training
data's hash), written last: a folder without it is incomplete and ignored. The newest
KEEP_CHECKPOINTS are kept. A resume refuses a checkpoint of other data or another config (but
for how often to evaluate or checkpoint). Plain torch, no Django.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

CHECKPOINT_FORMAT = "alignlab-checkpoint/1"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.pt"
META_NAME = "meta.json"
KEEP_CHECKPOINTS = 2  # the newest two: one may be mid-write when the worker dies
# Config keys older checkpoints may hold that no config has any more: PreferenceTrainingConfig's
# `backbone` (never read; a run starts from its base model).
RETIRED = {"backbone"}


def resume_state(
    checkpoint_dir: Path | None, model, optimizer, scheduler, config, data_hash: str
) -> tuple[int, list[dict], str | None]:
    """(step, metric history, checkpoint path) after loading the newest checkpoint in
    `checkpoint_dir` into the model, optimizer and schedule; (0, [], None) when there is none."""
    latest = latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
    if latest is None:
        return 0, [], None
    step, history = _load_checkpoint(
        latest, model, optimizer, scheduler, config=config, data_hash=data_hash
    )
    return step, history, str(latest)


def needs_final_checkpoint(checkpoint_dir, step: int, last_checkpoint: str | None) -> bool:
    """Whether a run that stopped at `step` still has to write it (it did not just save it)."""
    return (
        bool(checkpoint_dir) and step > 0 and not (last_checkpoint or "").endswith(_step_name(step))
    )


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    checkpoint_dir: str | os.PathLike,
    *,
    model,
    optimizer,
    scheduler,
    step: int,
    config,
    metrics: dict,
    history: list[dict],
    data_hash: str,
) -> Path:
    """Write `<dir>/step-NNNNNNNN/` (weights, optimizer/scheduler/RNG state, meta) atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    target = checkpoint_dir / _step_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=checkpoint_dir))
    try:
        save_model(model, str(tmp / WEIGHTS_NAME))
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
                "history": history,
            },
            tmp / STATE_NAME,
        )
        meta = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "config": asdict(config),
            "config_class": type(config).__name__,
            "metrics": metrics,
            "dataset_hash": data_hash,
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in _checkpoints(checkpoint_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _checkpoints(checkpoint_dir: Path) -> list[Path]:
    # Only complete ones: meta.json is written last, and temp dirs start with a dot.
    found = [p for p in checkpoint_dir.glob("step-*") if (p / META_NAME).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """The newest complete checkpoint under `checkpoint_dir`, or None."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    found = _checkpoints(Path(checkpoint_dir))
    return found[-1] if found else None


def _load_checkpoint(path: Path, model, optimizer, scheduler, *, config, data_hash: str):
    meta = json.loads((path / META_NAME).read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint ({meta.get('format')!r})")
    if meta["dataset_hash"] != data_hash:
        raise ValueError(f"{path} was written for different training data; resume=False?")
    if _trajectory(meta["config"]) != _trajectory(json.loads(json.dumps(asdict(config)))):
        raise ValueError(f"{path} was written with a different config; resume=False?")
    device = str(next(model.parameters()).device)
    load_model(model, str(path / WEIGHTS_NAME), strict=True, device=device)
    state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(_as_python_rng_state(state["rng"]["python"]))
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["step"], list(state["history"])


def _trajectory(config: dict) -> dict:
    # How often to eval or checkpoint may change across a restart; nothing else may. A setting
    # that no longer exists (RETIRED) was never read: a checkpoint that has it is no different.
    ignored = {"eval_every", "checkpoint_every", *RETIRED}
    return {k: v for k, v in config.items() if k not in ignored}


def _as_python_rng_state(state):
    # torch.load(weights_only=True) may hand tuples back as lists; random.setstate wants tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
