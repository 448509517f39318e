"""jaket-train end to end on a tiny store: losses fall, resume is exact, files, summary, encoding API."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from jaket.losses import LOSS_NAMES
from jaket.model import JAKETConfig
from jaket.pretrain import TrainConfig
from jaket.summary import read_metrics, summarize
from jaket.train import main, train

pytest_plugins = ["tests.jaket_fixtures"]
pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(lr=3e-3, km_lr=3e-3, warmup=5, decay="constant", save_every=0)


@pytest.fixture(scope="module")
def trained_run(tiny_bert, tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fall"
    before = torch.get_num_threads()
    torch.set_num_threads(1)                    # module scope: the one_thread fixture is not active yet
    try:
        train(tiny_store, out, TrainConfig(steps=50, **FAST), JAKETConfig(lm=str(tiny_bert)), progress=False,
              quiet=True)
    finally:
        torch.set_num_threads(before)
    return out


def test_each_loss_falls(trained_run):
    s = summarize(trained_run, window=10)
    for name in LOSS_NAMES:
        assert s[name]["n"] == 50, name
        assert s[name]["last"] < 0.9 * s[name]["first"], (name, s[name])


def test_run_directory_contract(trained_run):
    for name in ("model.safetensors", "memory.safetensors", "config.json", "metrics.jsonl", "loss.png",
                 "optimizer.safetensors", "rng.safetensors", "trainer_state.json"):
        assert (trained_run / name).is_file(), name
    rows = read_metrics(trained_run)
    assert [r["step"] for r in rows] == list(range(1, 51))
    assert all(set(LOSS_NAMES) <= set(r) for r in rows)
    assert sum(r["refresh"] for r in rows) == 3                  # before steps 10, 20, 30 (0-based)
    state = json.loads((trained_run / "trainer_state.json").read_text())
    assert state["step"] == 50 and state["memory"]["refreshes"] == 3
    # no pickle anywhere: every binary is a safetensors file
    for f in trained_run.rglob("*"):
        if f.is_file():
            assert f.suffix in (".safetensors", ".json", ".jsonl", ".png", ".txt"), f
            assert not f.read_bytes().startswith(b"\x80"), f  # pickle protocol header


def test_resume_reproduces_the_uninterrupted_curve(tiny_bert, tiny_store, tmp_path):
    cfg = dict(steps=20, save_every=0, lr=1e-3, km_lr=1e-3)
    full = train(tiny_store, tmp_path / "full", TrainConfig(**cfg), JAKETConfig(lm=str(tiny_bert)),
                 progress=False, quiet=True)
    part = train(tiny_store, tmp_path / "part", TrainConfig(**cfg), JAKETConfig(lm=str(tiny_bert)),
                 stop_after=10, progress=False, quiet=True)
    assert json.loads((part / "trainer_state.json").read_text())["step"] == 10
    result = CliRunner().invoke(main, ["--resume", str(part), "--no-progress"])
    assert result.exit_code == 0, result.output
    a, b = read_metrics(full), read_metrics(part)
    assert [r["step"] for r in b] == list(range(1, 21))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", *LOSS_NAMES):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    assert a[-1]["loss"] == pytest.approx(b[-1]["loss"], rel=1e-5)
    from safetensors.torch import load_file

    assert torch.allclose(load_file(full / "memory.safetensors")["entity"],
                          load_file(part / "memory.safetensors")["entity"], atol=1e-5)


def test_roberta_family_trains(tiny_roberta, tiny_store, tmp_path):
    out = train(tiny_store, tmp_path / "rob", TrainConfig(steps=12, **FAST), JAKETConfig(lm=str(tiny_roberta)),
                progress=False, quiet=True)
    rows = read_metrics(out)
    assert len(rows) == 12 and all(r["L_t"] is not None and r["L_e"] is not None for r in rows)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["lm1_layers"] == 2


def test_cli_and_summary(tiny_bert, tiny_store, tmp_path, capsys):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["--kg", str(tiny_store), "--lm", str(tiny_bert), "--steps", "6",
                                       "--out", str(out), "--lm1-layers", "1", "--km-layers", "1",
                                       "--fanouts", "3,2,1", "--no-progress", "--w-relation", "0.5"])
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["lm1_layers"] == 1 and cfg["train"]["fanouts"] == [3, 2, 1]
    assert cfg["train"]["weights"]["relation"] == 0.5
    from jaket.summary import main as summary_main

    assert summary_main([str(out)]) == 0
    text = capsys.readouterr().out
    assert "loss.png" in text and "L_e" in text and ("went down" in text or "did NOT" in text)
    bad = CliRunner().invoke(main, ["--kg", str(tmp_path / "missing.duckdb"), "--out", str(out)])
    assert bad.exit_code != 0


def test_encoding_api(trained_run, tiny_store, tmp_path):
    from jaket.encode import load_encoder
    from kg_store.store import KGStore
    from tests.jaket_fixtures import make_tiny_store

    enc = load_encoder(trained_run)
    with KGStore(tiny_store) as store:
        kg = enc.attach(store)
        assert kg.memory is enc.memory                      # the pretraining KG keeps its trained memory
        ent = enc.encode_entities(kg)
        assert ent.shape == (50, enc.model.hidden_size) and torch.isfinite(ent).all()
        assert not torch.allclose(ent, enc.encode_entities(kg, use_km=False))
        t = enc.encode_text(["Paris has country France.", "Oslo"], [[(0, 5, 6), (18, 24, 0)], []], kg)
        plain = enc.encode_text(["Paris has country France.", "Oslo"], [[(0, 5, 6), (18, 24, 0)], []])
    assert t.mention_spans.tolist() == [[0, 1, 1], [0, 4, 4]]
    assert t.mention_embeddings.shape == (2, enc.model.hidden_size)
    assert not torch.allclose(t.last_hidden_state[0], plain.last_hidden_state[0])   # the KM merge matters
    other = make_tiny_store(tmp_path / "other.duckdb", seed=5)
    with KGStore(other) as store:
        kg2 = enc.attach(store)                              # unseen KG: memory recomputed from descriptions
        assert kg2.memory is not enc.memory and kg2.memory.entity.shape == (50, enc.model.hidden_size)
        assert enc.encode_entities(kg2).shape == (50, enc.model.hidden_size)


def test_bf16_autocast_and_time_limit_then_resume(tiny_bert, tiny_store, tmp_path):
    """--precision bf16 trains with finite losses (CPU autocast here, CUDA on GPUs); --time-limit stops after
    the step that crosses it, saves, and --resume continues the same schedule to --steps."""
    out = tmp_path / "bf16"
    result = CliRunner().invoke(main, ["--kg", str(tiny_store), "--lm", str(tiny_bert), "--steps", "6",
                                       "--out", str(out), "--precision", "bf16", "--time-limit", "1e-9",
                                       "--no-progress", "--save-every", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 1
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == "bf16"
    result = CliRunner().invoke(main, ["--resume", str(out), "--precision", "fp32", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == "fp32"   # override kept
