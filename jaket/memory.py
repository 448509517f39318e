"""The entity context memory E^context: LM1 embeddings of ALL entity descriptions, refreshed on a schedule.

E^(0)_e = (Z^e_s + Z^e_o) / 2 at the first/last token of the description's mention of e, or the [CLS] state
when the description does not mention e (DESIGN.md's position-1 rule; tokens.CLS_SPAN).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from jaket.tokens import TokenizedTexts


@dataclass
class RefreshSchedule:
    init: int = 10          # I_init
    growth: float = 2.0     # a
    every: int = 3          # r
    max: int = 500          # I_max
    momentum: float = 0.8   # m

    def interval(self, i: int) -> int:
        """T(i) = min(I_init * a^floor(i / r), I_max)."""
        return int(min(self.init * self.growth ** (i // self.every), self.max))


def pool_mentions(z: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """E^(0) = (Z_s + Z_o) / 2 for z [B, L, F] and spans [B, 2] (0-based inclusive (s, o))."""
    rows = torch.arange(z.size(0), device=z.device)
    return (z[rows, spans[:, 0]] + z[rows, spans[:, 1]]) / 2


def length_buckets(lengths: torch.Tensor, batch_tokens: int, max_batch: int = 512) -> list[torch.Tensor]:
    """Indices sorted by length, cut into batches of at most `batch_tokens` padded tokens."""
    order = torch.argsort(lengths, stable=True)
    batches, lo, n = [], 0, len(order)
    sorted_len = lengths[order].tolist()
    while lo < n:
        hi = lo + 1
        while hi < n and hi - lo < max_batch and (hi - lo + 1) * sorted_len[hi] <= batch_tokens:
            hi += 1
        batches.append(order[lo:hi])
        lo = hi
    return batches


def encode_descriptions(lm: torch.nn.Module, tokens: TokenizedTexts, index: torch.Tensor | None = None,
                        pad_id: int = 0, batch_tokens: int = 8192, grad: bool = False, progress: bool = False,
                        desc: str = "memory") -> torch.Tensor:
    """LM1 over descriptions `index` (all by default) in length-bucketed batches -> E^(0) [len(index), F].

    With grad=False it runs under torch.inference_mode (the memory build / refresh); with grad=True the result
    is differentiable w.r.t. LM1 (the on-the-fly path)."""
    index = torch.arange(len(tokens)) if index is None else torch.as_tensor(index, dtype=torch.long)
    device = next(lm.parameters()).device
    out = torch.empty(len(index), lm.hidden_size, device=device)
    batches = length_buckets(tokens.lengths()[index], batch_tokens)
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    if grad:
        chunks, where = [], []
    bar = None
    if progress:
        from pipelines.progress import progress as progress_bar

        bar = progress_bar(total=len(index), desc=desc, unit="desc", leave=False, mininterval=1.0)
    with ctx:
        for sel in batches:
            ids, mask, spans = tokens.batch(index[sel], pad_id)
            z = lm.run_lm1(ids.to(device), mask.to(device))
            pooled = pool_mentions(z, spans.to(device))
            if grad:
                chunks.append(pooled)
                where.append(sel)
            else:
                out[sel.to(device)] = pooled
            if bar is not None:
                bar.update(len(sel))
    if bar is not None:
        bar.close()
    if grad:
        if not chunks:
            return out.requires_grad_(False)
        order = torch.cat(where).to(device)
        return torch.cat(chunks).index_select(0, torch.argsort(order))
    return out.clone()  # leave inference mode: an ordinary tensor


# encode(lm, tokens, pad_id=..., batch_tokens=..., progress=..., desc=...) -> [len(tokens), F]: how a memory build /
# refresh encodes ALL descriptions (encode_descriptions by default; jaket.distributed.ShardedEncoder under DDP)
Encoder = Callable[..., torch.Tensor]


def _fingerprint(tensors: list[torch.Tensor]) -> str:
    import hashlib

    h = hashlib.sha1()
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().contiguous().cpu().view(torch.uint8).reshape(-1).numpy().tobytes())
    return h.hexdigest()[:20]


def memory_cache_key(lm: torch.nn.Module, entity_tokens: TokenizedTexts, relation_tokens: TokenizedTexts) -> str:
    """Identifies a memory build: the LM1 weights (embeddings + first k layers) and the tokenized texts."""
    lm1 = [p for p in lm.embeddings.parameters()] + [p for p in lm.lm1.parameters()]
    toks = [*entity_tokens.to_tensors().values(), *relation_tokens.to_tensors().values()]
    return f"{_fingerprint(lm1)}-{_fingerprint(toks)}"


def memory_cache_path(cache_dir: str | os.PathLike, lm: torch.nn.Module, entity_tokens: TokenizedTexts,
                      relation_tokens: TokenizedTexts) -> Path:
    """CACHE_DIR/memory-<memory_cache_key>.safetensors."""
    return Path(cache_dir) / f"memory-{memory_cache_key(lm, entity_tokens, relation_tokens)}.safetensors"


class EntityMemory:
    """E^context [N, F] and the relation description encodings [P, F], with the refresh state."""

    def __init__(self, entity: torch.Tensor, relation: torch.Tensor, schedule: RefreshSchedule | None = None,
                 refreshes: int = 0, last_refresh: int = 0) -> None:
        self.entity, self.relation = entity, relation
        self.schedule = schedule or RefreshSchedule()
        self.refreshes = refreshes          # i = number of refreshes so far
        self.last_refresh = last_refresh    # step of the last refresh (0 = the initial build)

    @classmethod
    def build(cls, lm: torch.nn.Module, entity_tokens: TokenizedTexts, relation_tokens: TokenizedTexts,
              pad_id: int, schedule: RefreshSchedule | None = None, batch_tokens: int = 8192,
              progress: bool = True, encode: Encoder | None = None) -> EntityMemory:
        encode = encode or encode_descriptions
        was_training = lm.training
        lm.eval()
        ent = encode(lm, entity_tokens, pad_id=pad_id, batch_tokens=batch_tokens, progress=progress,
                     desc="memory: entities")
        rel = encode(lm, relation_tokens, pad_id=pad_id, batch_tokens=batch_tokens, progress=False)
        lm.train(was_training)
        return cls(ent, rel, schedule)

    @classmethod
    def build_cached(cls, cache_dir: str | os.PathLike | None, lm: torch.nn.Module,
                     entity_tokens: TokenizedTexts, relation_tokens: TokenizedTexts, pad_id: int,
                     schedule: RefreshSchedule | None = None, batch_tokens: int = 8192,
                     progress: bool = True) -> EntityMemory:
        """`build`, reusing CACHE_DIR/memory-<key>.safetensors when the same LM1 weights already encoded the
        same tokenized descriptions (repeated runs, baselines over seeds). The cache holds no training state."""
        if cache_dir is None:
            return cls.build(lm, entity_tokens, relation_tokens, pad_id, schedule, batch_tokens, progress)
        path = memory_cache_path(cache_dir, lm, entity_tokens, relation_tokens)
        cached = cls.load_cache(path, schedule, next(lm.parameters()).device)
        if cached is not None:
            return cached
        memory = cls.build(lm, entity_tokens, relation_tokens, pad_id, schedule, batch_tokens, progress)
        memory.save_cache(path)
        return memory

    @classmethod
    def load_cache(cls, path: Path, schedule: RefreshSchedule | None = None,
                   device: str | torch.device = "cpu") -> EntityMemory | None:
        """A cached build (values only, a fresh refresh state), or None when absent or unreadable."""
        if not path.exists():
            return None
        try:
            cached = cls.load(path, device)
        except Exception:  # noqa: BLE001 - a broken cache file is rebuilt
            return None
        return cls(cached.entity, cached.relation, schedule)

    def save_cache(self, path: Path) -> None:
        """Write a build cache atomically (temp name + os.replace); a cache that cannot be written is skipped."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            self.save(tmp)
            os.replace(tmp, path)
        except OSError:
            pass

    @property
    def next_refresh(self) -> int:
        return self.last_refresh + self.schedule.interval(self.refreshes)

    def due(self, step: int) -> bool:
        """Whether the memory is refreshed before training step `step` (steps counted from 0)."""
        return step >= self.next_refresh

    def momentum_update(self, new: torch.Tensor) -> None:
        """E^context <- m * E^context + (1 - m) * E^context_new."""
        m = self.schedule.momentum
        self.entity.mul_(m).add_(new.to(self.entity), alpha=1 - m)

    def refresh(self, lm: torch.nn.Module, entity_tokens: TokenizedTexts, pad_id: int, step: int,
                batch_tokens: int = 8192, progress: bool = False, encode: Encoder | None = None) -> None:
        """Re-encode every description with the current LM1 (eval mode, no grad) and apply the momentum.
        `encode` replaces encode_descriptions (under DDP: each rank encodes a shard, then all-gather)."""
        was_training = lm.training
        lm.eval()
        new = (encode or encode_descriptions)(lm, entity_tokens, pad_id=pad_id, batch_tokens=batch_tokens,
                                               progress=progress, desc="memory refresh")
        lm.train(was_training)
        self.momentum_update(new)
        self.refreshes += 1
        self.last_refresh = step

    def state(self) -> dict:
        return {"refreshes": self.refreshes, "last_refresh": self.last_refresh, "schedule": asdict(self.schedule)}

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        save_file({"entity": self.entity.contiguous().cpu(), "relation": self.relation.contiguous().cpu()},
                  str(path), metadata={"state": json.dumps(self.state())})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> EntityMemory:
        from safetensors import safe_open

        with safe_open(str(Path(path)), "pt", device=str(device)) as handle:
            state = json.loads((handle.metadata() or {}).get("state", "{}"))
            entity, relation = handle.get_tensor("entity"), handle.get_tensor("relation")
        schedule = RefreshSchedule(**state["schedule"]) if "schedule" in state else None
        return cls(entity, relation, schedule, state.get("refreshes", 0), state.get("last_refresh", 0))
