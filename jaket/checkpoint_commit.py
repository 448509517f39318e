"""Atomic multi-file checkpoints: a kill at any moment leaves either the previous checkpoint or the new one.

A checkpoint is several files (model, memory, optimizer, RNG, trainer_state.json). They are written into
RUN_DIR/.checkpoint/ first and synced; then the manifest RUN_DIR/.checkpoint/COMMIT (atomic: temp name +
os.replace) lists them, trainer_state.json last; then each file is os.replace'd into RUN_DIR. `recover` (run
before a run directory is read) completes a committed move (roll forward) or drops an uncommitted staging
directory (the previous checkpoint stays). Without the manifest step, a kill between two renames would leave
a new model beside an old trainer_state.json.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from jaket.checkpoint import write_json

STAGING = ".checkpoint"
MANIFEST = "COMMIT"
MARKER = "trainer_state.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def commit(run_dir: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write(staging_dir)` writes the checkpoint's files (trainer_state.json among them); they then replace
    the run directory's files atomically as a set."""
    run_dir = Path(run_dir)
    staging = run_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write(staging)
    files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    if MARKER not in files:
        raise ValueError(f"a checkpoint must contain {MARKER}")
    files.remove(MARKER)
    files.append(MARKER)                      # the commit marker of the run directory: replaced last
    for name in files:
        _fsync(staging / name)
    write_json(staging / MANIFEST, {"files": files})
    _apply(run_dir)


def _apply(run_dir: Path) -> None:
    staging = run_dir / STAGING
    files = json.loads((staging / MANIFEST).read_text())["files"]
    for name in files:
        src = staging / name
        if src.exists():                      # absent: moved before an interruption
            _move(src, run_dir / name)
    shutil.rmtree(staging, ignore_errors=True)


def recover(run_dir: str | os.PathLike) -> str:
    """Finish or drop an interrupted checkpoint write: 'none', 'rolled forward' or 'discarded'."""
    run_dir = Path(run_dir)
    staging = run_dir / STAGING
    if not staging.exists():
        return "none"
    if (staging / MANIFEST).is_file():
        _apply(run_dir)
        return "rolled forward"
    shutil.rmtree(staging, ignore_errors=True)
    return "discarded"
