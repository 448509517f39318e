"""Distributed pretraining: 2 gloo ranks on the tiny store.

One spawned pair of processes (shared by the checks below) runs, in order:
- the sharded encoder against a 1-process encode of all descriptions;
- run A: 6 DDP steps, bf16 autocast, memory refreshes before steps 2 and 4, rank 1 never drops a mention (so the
  entity head is unused on rank 1 and used on rank 0: find_unused_parameters must not hang); each rank dumps its
  parameters, memory and sampler state at every checkpoint through a spy on jaket.train._save; rank 1 is given
  its own --out so that any file it wrote would show;
- run C: 6 symmetric fp32 steps (the reference curve), run B: the same with a time limit that stops both
  ranks after step 1 (rank 0's decision, broadcast).
The test then resumes B with `jaket-train --nproc 2 --resume` (re-launch through torch.distributed.run) and
compares it with C.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jaket.losses import LOSS_NAMES
from jaket.summary import read_metrics

pytest_plugins = ["tests.jaket_fixtures"]

WORLD = 2
CFG = dict(steps=6, text_batch=4, kg_batch=8, lr=1e-3, km_lr=1e-3, warmup=2, decay="constant", seed=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spy_saves(rank: int, probe_dir: Path) -> None:
    """After each checkpoint, this rank's full state to probe_dir/<run>-rank<r>-step<s> (test only: outside the
    run directory; <run> = the first letter of the run directory's name)."""
    from safetensors.torch import save_file

    import jaket.train as T

    original = T._save

    def spy(out, model, memory, optimizer, trainer, step, env=None):  # noqa: ANN001, ANN202
        original(out, model, memory, optimizer, trainer, step, env)
        tensors = {f"param.{k}": v.detach().clone().contiguous() for k, v in model.named_parameters()}
        tensors["memory.entity"] = memory.entity.clone()
        tensors["memory.relation"] = memory.relation.clone()
        tensors["sampler"] = trainer.generator.get_state()
        save_file(tensors, str(probe_dir / f"{Path(out).name[0]}-rank{rank}-step{step}.safetensors"),
                  metadata={"refreshes": str(memory.refreshes)})

    T._save = spy


def _worker(rank: int, port: int, base: str, store: str, bert: str) -> None:
    import torch.distributed as tdist
    from safetensors.torch import save_file

    from jaket import distributed as dist
    from jaket.lm import LanguageModule, load_tokenizer
    from jaket.memory import RefreshSchedule, encode_descriptions
    from jaket.model import JAKETConfig
    from jaket.pretrain import TrainConfig
    from jaket.train import _descriptions, train
    from kg_store.store import KGStore

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=WORLD)
    base_p = Path(base)
    probes = base_p / "probes"
    env = dist.setup("cpu")
    assert env.rank == rank and env.world_size == WORLD and env.backend == "gloo"

    # sharded encode == 1-process encode of every description
    tok = load_tokenizer(bert)
    lm = LanguageModule.from_pretrained(bert).eval()
    with KGStore(store) as kg:
        ent, _ = _descriptions(kg, tok, JAKETConfig())
    full = encode_descriptions(lm, ent, pad_id=tok.pad_token_id)
    sharded = dist.ShardedEncoder(env)(lm, ent, pad_id=tok.pad_token_id)
    save_file({"full": full, "sharded": sharded}, str(probes / f"encode-rank{rank}.safetensors"))

    refresh = RefreshSchedule(init=2, every=10)
    _spy_saves(rank, probes)
    tcfg_a = TrainConfig(**CFG, refresh=refresh, save_every=3, precision="bf16",
                         mention_drop=0.5 if rank == 0 else 0.0)
    out_a = base_p / ("A" if rank == 0 else "A-rank1")
    times = {"setup": time.perf_counter()}
    train(store, out_a, tcfg_a, JAKETConfig(lm=bert), progress=False, quiet=True)
    times["A"] = time.perf_counter()
    train(store, base_p / "C", TrainConfig(**CFG, refresh=refresh, save_every=0), JAKETConfig(lm=bert),
          progress=False, quiet=True)
    times["C"] = time.perf_counter()
    train(store, base_p / "B", TrainConfig(**CFG, refresh=refresh, save_every=0), JAKETConfig(lm=bert),
          progress=False, quiet=True, time_limit=1e-9)
    times["B"] = time.perf_counter()
    tdist.destroy_process_group()
    (probes / f"times-rank{rank}.json").write_text(json.dumps(times))


def _spawn(args: tuple, timeout: float) -> None:
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_worker, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"DDP workers did not finish within {timeout:.0f}s (hang?)")


@pytest.fixture(scope="module")
def ddp_runs(tiny_store, tiny_bert, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    (base / "probes").mkdir()
    _spawn((_free_port(), str(base), str(tiny_store), str(tiny_bert)), timeout=240)
    return base


def _load(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as h:
        return {k: h.get_tensor(k) for k in h.keys()}, h.metadata()  # noqa: SIM118


def test_shard_bounds_are_contiguous_and_token_balanced():
    from jaket.distributed import shard_bounds, shard_sizes

    assert shard_bounds(torch.tensor([5, 5, 5, 5]), 2) == [0, 2, 4]
    assert shard_bounds(torch.tensor([10, 1, 1, 1, 1]), 2) == [0, 1, 5]       # one long text = half the work
    assert shard_bounds(torch.tensor([1] * 10), 3) == [0, 3, 7, 10]
    assert shard_bounds(torch.tensor([3]), 2) == [0, 1, 1]                    # an empty shard is fine
    assert shard_bounds(torch.tensor([1, 2, 3]), 1) == [0, 3]
    lengths = torch.randint(3, 33, (1000,), generator=torch.Generator().manual_seed(0))
    bounds = shard_bounds(lengths, 4)
    assert sum(shard_sizes(bounds)) == 1000 and bounds == sorted(bounds)
    tokens = [int(lengths[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert max(tokens) - min(tokens) <= 2 * 32


def test_sharded_encoder_gathers_the_full_memory(ddp_runs):
    r0, _ = _load(ddp_runs / "probes" / "encode-rank0.safetensors")
    r1, _ = _load(ddp_runs / "probes" / "encode-rank1.safetensors")
    assert r0["sharded"].shape == r0["full"].shape == (50, 32)
    assert torch.equal(r0["sharded"], r1["sharded"])                 # every rank holds the same rows
    assert torch.allclose(r0["sharded"], r0["full"], atol=1e-5)      # ... and they are the right rows


def test_ranks_hold_identical_parameters_and_memory(ddp_runs):
    probes = ddp_runs / "probes"
    for step in (3, 6):
        a, meta_a = _load(probes / f"A-rank0-step{step}.safetensors")
        b, meta_b = _load(probes / f"A-rank1-step{step}.safetensors")
        assert a.keys() == b.keys()
        different = [k for k in a if k != "sampler" and not torch.equal(a[k], b[k])]
        assert not different, different[:5]
        assert not torch.equal(a["sampler"], b["sampler"])             # each rank drew its own batches
        assert meta_a["refreshes"] == meta_b["refreshes"] == str({3: 1, 6: 2}[step])
    first, _ = _load(probes / "A-rank0-step3.safetensors")
    last, _ = _load(probes / "A-rank0-step6.safetensors")
    assert not torch.equal(first["memory.entity"], last["memory.entity"])    # refreshed between them
    assert any(not torch.equal(first[k], last[k]) for k in first if k.startswith("param."))   # it trained
    # the checkpoint rank 0 wrote is the state both ranks hold
    from safetensors.torch import load_file

    model = load_file(ddp_runs / "A" / "model.safetensors")
    for k, v in model.items():
        if f"param.{k}" in last:
            assert torch.equal(v, last[f"param.{k}"]), k
    assert torch.equal(load_file(ddp_runs / "A" / "memory.safetensors")["entity"], last["memory.entity"])


def test_unused_parameters_on_one_rank_do_not_hang(ddp_runs):
    rows = read_metrics(ddp_runs / "A")
    assert [r["step"] for r in rows] == list(range(1, 7))
    # rank 1 never drops a mention (no L_e there); rank 0 does: the entity head was used on one rank only
    assert all(r["L_e"] is not None for r in rows)
    assert sum(r["refresh"] for r in rows) == 2
    cfg = json.loads((ddp_runs / "A" / "config.json").read_text())
    assert cfg["train"]["mention_drop"] == 0.5 and cfg["train"]["precision"] == "bf16"   # rank 0's config


def test_only_rank0_writes(ddp_runs):
    assert not (ddp_runs / "A-rank1").exists()
    names = sorted(p.name for p in (ddp_runs / "A").iterdir())
    assert names == ["config.json", "lm", "loss.png", "memory.safetensors", "metrics.jsonl", "model.safetensors",
                     "optimizer.safetensors", "rng-rank1.safetensors", "rng.safetensors", "trainer_state.json"]
    from safetensors.torch import load_file

    r0, r1 = load_file(ddp_runs / "A" / "rng.safetensors"), load_file(ddp_runs / "A" / "rng-rank1.safetensors")
    probe1, _ = _load(ddp_runs / "probes" / "A-rank1-step6.safetensors")
    assert torch.equal(r1["sampler"], probe1["sampler"]) and not torch.equal(r0["sampler"], r1["sampler"])
    assert json.loads((ddp_runs / "A" / "trainer_state.json").read_text())["world_size"] == 2


def test_time_limit_stops_all_ranks_and_cli_resume_continues_the_curve(ddp_runs):
    part = ddp_runs / "B"
    assert json.loads((part / "trainer_state.json").read_text())["step"] == 1      # both ranks stopped at 1
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "jaket.train", "--resume", str(part), "--nproc", "2",
                          "--no-progress", "--threads", "1"], capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    full, resumed = read_metrics(ddp_runs / "C"), read_metrics(part)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for ra, rb in zip(full, resumed, strict=True):
        for key in ("loss", *LOSS_NAMES):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    from safetensors.torch import load_file

    assert torch.allclose(load_file(ddp_runs / "C" / "memory.safetensors")["entity"],
                          load_file(part / "memory.safetensors")["entity"], atol=1e-5)
