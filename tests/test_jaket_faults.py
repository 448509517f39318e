"""Training faults: a real SIGKILL between checkpoints, and a crash in the middle of a checkpoint write.

Every interrupted run is resumed and compared with one uninterrupted run of the same configuration: the
metrics curve continues from the last complete checkpoint and equals the uninterrupted curve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from jaket.losses import LOSS_NAMES
from jaket.summary import read_metrics
from jaket.train import main

pytest_plugins = ["tests.jaket_fixtures"]
pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, EVERY = 16, 5


def _args(store: Path, bert: Path, out: Path) -> list[str]:
    return ["--kg", str(store), "--lm", str(bert), "--steps", str(STEPS), "--save-every", str(EVERY),
            "--out", str(out), "--lr", "1e-3", "--km-lr", "1e-3", "--refresh-init", "4", "--no-progress",
            "--threads", "1"]


@pytest.fixture(scope="module")
def reference(tiny_store, tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "uninterrupted"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(main, _args(tiny_store, tiny_bert, out))
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out


def _same_curve(reference: Path, run: Path) -> None:
    a, b = read_metrics(reference), read_metrics(run)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", *LOSS_NAMES):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    from safetensors.torch import load_file

    for name, key in (("memory.safetensors", "entity"), ("model.safetensors", "km.relation")):
        assert torch.allclose(load_file(reference / name)[key], load_file(run / name)[key], atol=1e-5), name


def _step(run: Path) -> int:
    return json.loads((run / "trainer_state.json").read_text())["step"]


def test_sigkill_between_checkpoints_then_resume(tiny_store, tiny_bert, reference, tmp_path):
    run = tmp_path / "killed"
    exe = Path(sys.executable).with_name("jaket-train")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jaket.train"]
    proc = subprocess.Popen([*cmd, *_args(tiny_store, tiny_bert, run)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            step = _step(run)
            rows = len((run / "metrics.jsonl").read_text().splitlines())
        except (OSError, ValueError):
            step, rows = 0, 0
        if step >= EVERY and rows >= step + 2:      # a checkpoint on disk and steps logged after it
            proc.send_signal(signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert killed_at is not None, f"not killed between checkpoints (exit {proc.returncode}): {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL
    last = _step(run)
    assert EVERY <= last < STEPS and last % EVERY == 0
    assert len(read_metrics(run)) > last                      # rows past the checkpoint, to be dropped
    result = CliRunner().invoke(main, ["--resume", str(run), "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    _same_curve(reference, run)


class _Crash(BaseException):
    """Stands for a kill: nothing in the trainer catches it, so the disk is left as a kill would leave it."""


@pytest.mark.parametrize("where", ["before-manifest", "mid-move"])
def test_crash_inside_a_checkpoint_write_never_leaves_a_torn_checkpoint(tiny_store, tiny_bert, reference,
                                                                        tmp_path, monkeypatch, where):
    """The second checkpoint (step 10) dies while being written. Before the manifest: the step-5 checkpoint
    stays; halfway through the moves: recovery completes the step-10 one. Either way the run resumes to the
    uninterrupted curve."""
    import jaket.checkpoint_commit as cc

    run = tmp_path / where
    commits = {"n": 0}
    real_write_json, real_move = cc.write_json, cc._move

    def write_json(path, obj):  # noqa: ANN001, ANN202
        if Path(path).name == cc.MANIFEST:
            commits["n"] += 1
            if commits["n"] == 2 and where == "before-manifest":
                raise _Crash
        return real_write_json(path, obj)

    moved = {"n": 0}

    def move(src, dst):  # noqa: ANN001, ANN202
        if commits["n"] == 2 and where == "mid-move":
            moved["n"] += 1
            if moved["n"] == 3:
                raise _Crash
        return real_move(src, dst)

    monkeypatch.setattr(cc, "write_json", write_json)
    monkeypatch.setattr(cc, "_move", move)
    with pytest.raises(_Crash):
        CliRunner().invoke(main, _args(tiny_store, tiny_bert, run), catch_exceptions=False)
    monkeypatch.undo()
    staging = run / cc.STAGING
    assert staging.is_dir() and _step(run) == EVERY                  # the old commit marker is in place
    marker_memory = json.loads((run / "trainer_state.json").read_text())["memory"]
    if where == "mid-move":       # ... beside step-10 files: without recovery this checkpoint would be torn
        assert (staging / cc.MANIFEST).is_file() and (staging / "trainer_state.json").is_file()
        assert _memory_state(run)["refreshes"] == marker_memory["refreshes"] + 1
    else:
        assert not (staging / cc.MANIFEST).exists()
        assert _memory_state(run) == marker_memory
    result = CliRunner().invoke(main, ["--resume", str(run), "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    verdict = "rolled forward" if where == "mid-move" else "discarded"
    assert f"interrupted checkpoint write was {verdict}" in result.output
    assert not staging.exists()
    _same_curve(reference, run)


def _memory_state(run: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(run / "memory.safetensors"), "pt") as h:
        return json.loads(h.metadata()["state"])


def test_recover_is_idempotent(tmp_path):
    from jaket.checkpoint_commit import commit, recover

    def write(step: int):  # noqa: ANN202
        def inner(staging: Path) -> None:
            (staging / "sub").mkdir()
            (staging / "sub" / "a.bin").write_bytes(bytes([step]) * 10)
            (staging / "trainer_state.json").write_text(json.dumps({"step": step}))
        return inner

    commit(tmp_path, write(1))
    assert recover(tmp_path) == "none" and (tmp_path / "sub" / "a.bin").read_bytes() == b"\x01" * 10
    with pytest.raises(ValueError, match="trainer_state"):
        commit(tmp_path, lambda staging: (staging / "x").write_text("no marker"))
    assert recover(tmp_path) == "discarded" and _step(tmp_path) == 1
    # a committed staging directory whose first file was already moved: recovery moves the rest, once
    staging = tmp_path / ".checkpoint"
    write(2)(staging.mkdir() or staging)
    (tmp_path / "sub" / "a.bin").write_bytes(b"\x02" * 10)
    (staging / "sub" / "a.bin").unlink()
    (staging / "COMMIT").write_text(json.dumps({"files": ["sub/a.bin", "trainer_state.json"]}))
    assert recover(tmp_path) == "rolled forward" and _step(tmp_path) == 2 and recover(tmp_path) == "none"
