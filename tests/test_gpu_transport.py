"""benchmarks/gpu/transport.py: a run packed as bf16 deltas (tensors cut by rows) unpacks to the trained model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from jaket.model import JAKETConfig
from jaket.pretrain import TrainConfig
from jaket.train import train

pytest_plugins = ["tests.jaket_fixtures"]
pytestmark = pytest.mark.usefixtures("one_thread")


def _transport():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "transport.py"
    spec = importlib.util.spec_from_file_location("transport", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_unpack_roundtrip(tiny_bert, tiny_store, tmp_path):
    transport = _transport()
    run = train(tiny_store, tmp_path / "run", TrainConfig(steps=4, lr=1e-2, km_lr=1e-2, save_every=0),
                JAKETConfig(lm=str(tiny_bert)), progress=False, quiet=True)
    stats = transport.pack(run, tmp_path / "packed", max_mb=0.02)
    assert stats["delta_files"] > 1 and stats["full_tensors"] > 0
    for f in (tmp_path / "packed").glob("delta-*.safetensors"):
        assert f.stat().st_size < 0.03 * 2**20, f                       # every delta file under the cap
    transport.unpack(tmp_path / "packed", tmp_path / "back", kg=str(tiny_store), lm=str(tiny_bert))
    a, b = load_file(run / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert a.keys() == b.keys()
    base = transport.base_tensors(str(tiny_bert), JAKETConfig.from_dict(
        json.loads((run / "config.json").read_text())["model"]).lm1_layers)
    moved = 0
    for k in a:
        update = (a[k] - base[k]).abs().max() if k in base else torch.tensor(1.0)
        assert torch.allclose(a[k], b[k], atol=float(update) * 2 ** -7 + 1e-7), k   # bf16 error of the update
        moved += int(k in base and float(update) > 0)
    assert moved > 10                                   # the encoder did train, so deltas carry information
    assert (tmp_path / "back" / "memory.safetensors").is_file()
    assert json.loads((tmp_path / "back" / "config.json").read_text())["kg"] == str(Path(tiny_store).resolve())
