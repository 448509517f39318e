"""Distributed pretraining (torch.distributed): DDP over ranks, the context memory sharded across ranks.

Launched by `torchrun --nproc_per_node N -m jaket.train ...` (or `jaket-train --nproc N ...`, which re-launches
itself through torch.distributed.run). Backend gloo on CPU, NCCL with --device cuda (rank -> cuda:LOCAL_RANK).

- replicated: the model (DDP broadcasts rank 0's weights, then averages gradients every step), the optimizer
  state, the full memory E^context (every rank reads any entity's row), the refresh schedule;
- sharded: the memory build and every refresh (rank r encodes a contiguous id range, shard_bounds: about the same
  number of description tokens per rank, with its LM1 copy, then all-gather: every rank holds the same full
  memory; the momentum update is then identical everywhere), and the batches (rank r's sampler: seed + r);
- rank 0 only: checkpoints (it gathers every rank's RNG state), metrics (losses averaged over ranks), logs.
A 1-process run takes none of these paths: it stays bit-identical to the plain trainer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from jaket.memory import EntityMemory, RefreshSchedule, encode_descriptions, memory_cache_path
from jaket.tokens import TokenizedTexts

_OWNED = False   # whether setup() created the process group (teardown() destroys only that one)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def comm_device(self) -> torch.device:
        """Where collective tensors live: the rank's GPU for NCCL, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def env_from_vars() -> DistEnv:
    """RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE as torchrun sets them (1 process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return DistEnv(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")), local_world)


def setup(device: str) -> DistEnv:
    """Join (or create) the default process group when WORLD_SIZE > 1: NCCL for CUDA devices, gloo otherwise.
    With CUDA each rank takes cuda:LOCAL_RANK as its current device."""
    global _OWNED
    env = env_from_vars()
    if dist.is_available() and dist.is_initialized():
        env = DistEnv(dist.get_rank(), dist.get_world_size(), env.local_rank, env.local_world_size,
                      dist.get_backend())
    elif env.world_size > 1:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend)
        _OWNED = True
        env = DistEnv(env.rank, env.world_size, env.local_rank, env.local_world_size, backend)
    if env.distributed and device.startswith("cuda"):
        torch.cuda.set_device(env.local_rank)
    return env


def teardown() -> None:
    global _OWNED
    if _OWNED and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


def device_for(env: DistEnv, device: str) -> torch.device:
    """cuda -> cuda:LOCAL_RANK under DDP; anything else unchanged."""
    if env.distributed and device.startswith("cuda"):
        return torch.device("cuda", env.local_rank)
    return torch.device(device)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def shard_bounds(lengths: torch.Tensor, world_size: int) -> list[int]:
    """Contiguous shards of texts with about the same number of tokens each: rank r encodes texts
    [bounds[r], bounds[r + 1]). Computed from the token counts alone, so every rank derives the same bounds."""
    n = len(lengths)
    if world_size <= 1 or n == 0:
        return [0, *[n] * max(1, world_size)]
    before = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(lengths.to(torch.float64), 0)])
    targets = torch.arange(1, world_size, dtype=torch.float64) * float(before[-1]) / world_size
    hi = torch.searchsorted(before, targets).clamp(max=n)             # first cut with >= target tokens before it
    lo = (hi - 1).clamp(min=0)
    cuts = torch.where(targets - before[lo] < before[hi] - targets, lo, hi)   # the nearer of the two
    return [0, *cuts.tolist(), n]


def shard_sizes(bounds: list[int]) -> list[int]:
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def all_gather_rows(local: torch.Tensor, sizes: list[int], env: DistEnv) -> torch.Tensor:
    """Concatenate every rank's rows (rank r holds sizes[r] of them) into the full tensor on every rank; the
    shards are padded to the largest for the all-gather and the padding dropped after it."""
    if not env.distributed or sum(sizes) == 0:
        return local
    width = max(sizes)
    dev = env.comm_device
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=dev)
    padded[:len(local)] = local.to(dev)
    parts = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(local.device)


class ShardedEncoder:
    """A memory Encoder (jaket.memory): this rank encodes its shard of the descriptions, then all-gather.
    `last_encode_s` / `last_gather_s`: the two parts of the last call (the gather includes waiting for the
    slowest rank)."""

    def __init__(self, env: DistEnv) -> None:
        self.env = env
        self.last_encode_s = 0.0
        self.last_gather_s = 0.0

    def __call__(self, lm: torch.nn.Module, tokens: TokenizedTexts, pad_id: int = 0, batch_tokens: int = 8192,
                 progress: bool = False, desc: str = "memory") -> torch.Tensor:
        bounds = shard_bounds(tokens.lengths(), self.env.world_size)
        lo, hi = bounds[self.env.rank], bounds[self.env.rank + 1]
        t0 = time.perf_counter()
        local = encode_descriptions(lm, tokens, torch.arange(lo, hi), pad_id, batch_tokens,
                                    progress=progress and self.env.is_main, desc=f"{desc} (shard {lo}..{hi})")
        t1 = time.perf_counter()
        full = all_gather_rows(local, shard_sizes(bounds), self.env)
        self.last_encode_s, self.last_gather_s = t1 - t0, time.perf_counter() - t1
        return full


def broadcast_flag(flag: bool, env: DistEnv) -> bool:
    """Rank 0's decision on every rank."""
    if not env.distributed:
        return flag
    t = torch.tensor([int(flag)], device=env.comm_device)
    dist.broadcast(t, 0)
    return bool(t.item())


def build_memory(env: DistEnv, cache_dir: str | os.PathLike | None, lm: torch.nn.Module,
                 entity_tokens: TokenizedTexts, relation_tokens: TokenizedTexts, pad_id: int,
                 schedule: RefreshSchedule | None, batch_tokens: int, progress: bool = True) -> EntityMemory:
    """EntityMemory.build_cached, sharded: rank 0 looks up the build cache (and broadcasts a hit), else every
    rank encodes its shard and all-gathers; rank 0 writes the cache."""
    if not env.distributed:
        return EntityMemory.build_cached(cache_dir, lm, entity_tokens, relation_tokens, pad_id, schedule,
                                         batch_tokens, progress=progress)
    path: Path | None = None
    cached = None
    if env.is_main and cache_dir is not None:
        path = memory_cache_path(cache_dir, lm, entity_tokens, relation_tokens)
        cached = EntityMemory.load_cache(path, schedule)
    if broadcast_flag(cached is not None, env):
        dev = env.comm_device
        hidden = lm.hidden_size
        ent = cached.entity.to(dev) if cached else torch.empty(len(entity_tokens), hidden, device=dev)
        rel = cached.relation.to(dev) if cached else torch.empty(len(relation_tokens), hidden, device=dev)
        dist.broadcast(ent, 0)
        dist.broadcast(rel, 0)
        return EntityMemory(ent, rel, schedule)
    memory = EntityMemory.build(lm, entity_tokens, relation_tokens, pad_id, schedule, batch_tokens,
                                progress=progress, encode=ShardedEncoder(env))
    if path is not None:
        memory.save_cache(path)
    return memory


def reduce_losses(total: torch.Tensor, logged: dict[str, float | None], env: DistEnv
                  ) -> tuple[float, dict[str, float | None]]:
    """The step's loss and each logged loss averaged over the ranks that computed it (None where none did)."""
    if not env.distributed:
        return float(total.detach()), logged
    names = list(logged)
    values = [float(total.detach())] + [logged[k] if logged[k] is not None else 0.0 for k in names]
    present = [1.0] + [float(logged[k] is not None) for k in names]
    t = torch.tensor(values + present, dtype=torch.float64, device=env.comm_device)
    dist.all_reduce(t)
    sums, counts = t[:len(values)].tolist(), t[len(values):].tolist()
    means = [s / c if c else None for s, c in zip(sums, counts, strict=True)]
    return means[0], dict(zip(names, means[1:], strict=True))


def gather_states(states: dict[str, torch.Tensor], env: DistEnv) -> list[dict[str, torch.Tensor]]:
    """Every rank's uint8 state tensors (RNG states) on every rank, in rank order, so that rank 0 can save
    them all (other ranks write nothing)."""
    if not env.distributed:
        return [states]
    names = sorted(states)
    flat = torch.cat([states[k].reshape(-1).to(torch.uint8).cpu() for k in names])
    sizes = torch.tensor([states[k].numel() for k in names], dtype=torch.long)
    dev = env.comm_device
    all_sizes = [torch.empty_like(sizes, device=dev) for _ in range(env.world_size)]
    dist.all_gather(all_sizes, sizes.to(dev))
    width = max(int(s.sum()) for s in all_sizes)
    padded = torch.zeros(width, dtype=torch.uint8, device=dev)
    padded[:len(flat)] = flat.to(dev)
    parts = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(parts, padded)
    out = []
    for part, sz in zip(parts, all_sizes, strict=True):
        chunks = torch.split(part.cpu()[:int(sz.sum())], sz.cpu().tolist())
        out.append(dict(zip(names, (c.clone() for c in chunks), strict=True)))
    return out


class _Step(torch.nn.Module):
    """The whole pretraining step as one module forward, so DDP sees every parameter use (heads, MLM head,
    the straight-through description path) between its forward and backward hooks."""

    def __init__(self, model: torch.nn.Module, losses: Callable[[int], tuple]) -> None:
        super().__init__()
        self.model = model
        self.losses = losses

    def forward(self, step: int) -> tuple:
        return self.losses(step)


def wrap_step(model: torch.nn.Module, losses: Callable[[int], tuple], env: DistEnv,
              device: torch.device) -> Callable[[int], tuple]:
    """`losses` itself in one process; under DDP a DistributedDataParallel around the step. Parameters that a
    step leaves unused on some rank (no dropped mention -> no L_e head, no relation pairs ...) are handled by
    find_unused_parameters=True: they are marked ready with a zero contribution instead of hanging the
    all-reduce. Buffers are constants (position ids): synced once at construction, not every forward."""
    if not env.distributed:
        return losses
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else env.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(_Step(model, losses), device_ids=ids, find_unused_parameters=True,
                                   forward_sync_buffers=False)


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run `python -m jaket.train ARGV` on `nproc` local processes through torch.distributed.run (torchrun
    --standalone: a free local rendezvous port). Returns the exit status."""
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc), "--module",
                                         "jaket.train", *argv])
    try:
        run(args)
    except Exception as exc:  # noqa: BLE001 - torchrun's ChildFailedError already printed the rank's error
        print(f"jaket-train: distributed run failed: {type(exc).__name__}", flush=True)
        return 1
    return 0
