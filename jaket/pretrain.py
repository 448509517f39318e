"""One pretraining step: sample text + KG, read E^(0), run the model, compute the four losses.

E^(0) sources (`e0_mode`):
- "memory": E^(0) = E^context[sampled entities] (no gradient into LM1 from the KG side) — the default;
- "onthefly": E^(0) recomputed by LM1 from the descriptions of every sampled entity, with gradient — the
  paper's slow path without memory (used by the benchmark and available as a flag).
Gradient path at refresh (our reading of the paper, `desc_grad="refresh"`): at a step where the memory is
refreshed, the sampled entities' E^(0) is ALSO recomputed with gradient by LM1 from their descriptions and
fed in straight-through: E^(0) = E^context_new + (1 - m) * (LM1(x^e) - stopgrad(LM1(x^e))). The value equals
the refreshed memory row; the gradient is that of the momentum update's new part, (1 - m) * dLM1(x^e).
So LM1 learns from the KG losses through the description path at refresh steps, and through the text path
(Z = LM1(x)) at every step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from jaket.losses import (
    LOSS_NAMES,
    LossWeights,
    category_loss,
    drop_mentions,
    entity_loss,
    mask_tokens,
    relation_loss,
    token_loss,
)
from jaket.memory import Encoder, EntityMemory, RefreshSchedule, encode_descriptions
from jaket.model import JAKETModel
from jaket.sampling import (
    GraphTensors,
    NeighborSampler,
    Subgraph,
    TextBatch,
    TextSampler,
    neighbor_pairs,
    sample_pretraining_batch,
)
from jaket.tokens import TokenizedTexts


@dataclass
class TrainConfig:
    steps: int = 300
    text_batch: int = 8          # sequences per step
    kg_batch: int = 16           # random root entities per step (besides the entities mentioned in the text)
    fanouts: list[int] = field(default_factory=lambda: [4, 2])
    rel_batch: int = 32          # held-out triples for L_r per step
    neighbor_candidates: int = 8  # graph-neighbour candidates per dropped mention (L_e)
    negatives: int = 32          # random candidates per dropped mention (L_e)
    mask_prob: float = 0.15
    mention_drop: float = 0.15
    lr: float = 5e-5             # LM parameters
    km_lr: float = 1e-3          # KM, merge LayerNorm, heads
    weight_decay: float = 0.01
    warmup: float = 0.06         # fraction of steps (or an absolute count when >= 1)
    decay: str = "linear"        # linear | cosine | constant
    max_grad_norm: float = 1.0
    seed: int = 0
    weights: LossWeights = field(default_factory=LossWeights)
    refresh: RefreshSchedule = field(default_factory=RefreshSchedule)
    desc_grad: str = "refresh"   # refresh | never
    e0_mode: str = "memory"      # memory | onthefly
    batch_tokens: int = 8192     # token budget of a memory-build batch
    log_every: int = 1
    save_every: int = 100
    device: str = "cpu"
    precision: str = "fp32"      # fp32 | bf16 (autocast of the step's forward; weights and memory stay fp32)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if isinstance(d.get("weights"), dict):
            d["weights"] = LossWeights(**d["weights"])
        if isinstance(d.get("refresh"), dict):
            d["refresh"] = RefreshSchedule(**d["refresh"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then linear / cosine decay to 0 at cfg.steps (or constant)."""
    warm = cfg.warmup if cfg.warmup >= 1 else cfg.warmup * cfg.steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if cfg.decay == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1.0, cfg.steps - warm))
    if cfg.decay == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return max(0.0, 1 - progress)


def make_optimizer(model: JAKETModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """Two learning rates: the pretrained encoder (lr) and everything new (km_lr: KM, merge LayerNorm, heads,
    and the MLM head's transform when the checkpoint had none). No weight decay on biases / norms."""
    fresh_head = bool(model.config.extra.get("fresh_mlm_head", False))
    groups: dict[tuple[bool, bool], list] = {(a, b): [] for a in (True, False) for b in (True, False)}
    word = model.lm.word_embeddings.weight
    for name, param in model.named_parameters():
        head = name.startswith(("lm.masked_lm.cls.", "lm.masked_lm.lm_head.")) and param is not word
        is_new = not name.startswith("lm.") or (fresh_head and head)
        groups[(is_new, param.ndim >= 2)].append(param)
    param_groups = []
    for (is_new, decay), params in groups.items():
        if params:
            lr = cfg.km_lr if is_new else cfg.lr
            param_groups.append({"params": params, "lr": lr, "base_lr": lr,
                                 "weight_decay": cfg.weight_decay if decay else 0.0})
    return torch.optim.AdamW(param_groups, foreach=True)


def autocast_context(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16: torch.autocast over the step's forward (matmuls in bf16, reductions and losses in fp32)."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
    return contextlib.nullcontext


def local_index(node_ids: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Position of each global id of `query` in `node_ids` (all must be present)."""
    sorted_ids, perm = torch.sort(node_ids)
    return perm[torch.searchsorted(sorted_ids, query)]


class Pretrainer:
    """One rank's step. Under DDP (jaket.distributed) `rank` seeds this rank's sampler stream (seed + rank: rank 0
    draws what a 1-process run draws) and `encode` is the sharded memory encoder (every rank then holds the same
    full memory after a refresh)."""

    def __init__(self, model: JAKETModel, tokenizer: object, store: object, memory: EntityMemory,
                 entity_tokens: TokenizedTexts, cfg: TrainConfig, rank: int = 0,
                 encode: Encoder | None = None) -> None:
        self.model, self.tokenizer, self.store, self.memory = model, tokenizer, store, memory
        self.entity_tokens, self.cfg = entity_tokens, cfg
        self.device = torch.device(cfg.device)
        self.num_entities = model.config.num_entities
        self.num_relations = model.config.num_relations
        self.graph = GraphTensors.from_csr(store.csr(add_inverse=True), self.num_relations)
        self.sampler = NeighborSampler(self.graph, cfg.fanouts)
        self.text = TextSampler(store, tokenizer, cfg.text_batch, model.config.max_seq_len)
        self.categories = torch.from_numpy(store.entity_categories()).long()
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.pad_id = int(tokenizer.pad_token_id)
        self.generator = torch.Generator().manual_seed(cfg.seed + rank)
        self.encode = encode

    # ---- E^(0) ----
    def entity_inputs(self, node_ids: torch.Tensor, refreshed: bool) -> torch.Tensor:
        lm = self.model.lm
        if self.cfg.e0_mode == "onthefly":      # Z^e = LM1(description); E^(0) = (Z_s + Z_o)/2, with grad
            return encode_descriptions(lm, self.entity_tokens, node_ids, self.pad_id, self.cfg.batch_tokens,
                                       grad=True)
        e0 = self.memory.entity[node_ids.to(self.memory.entity.device)].to(self.device)  # E^(0) <- E^context
        if refreshed and self.cfg.desc_grad == "refresh":
            fresh = encode_descriptions(lm, self.entity_tokens, node_ids, self.pad_id, self.cfg.batch_tokens,
                                        grad=True)
            e0 = e0 + (1 - self.memory.schedule.momentum) * (fresh - fresh.detach())
        return e0

    def maybe_refresh(self, step: int) -> bool:
        if self.cfg.e0_mode != "memory" or not self.memory.due(step):
            return False
        self.memory.refresh(self.model.lm, self.entity_tokens, self.pad_id, step, self.cfg.batch_tokens,
                            encode=self.encode)
        return True

    # ---- the step ----
    def sample(self) -> tuple[TextBatch | None, Subgraph, torch.Tensor, torch.Tensor]:
        return sample_pretraining_batch(self.text, self.sampler, self.num_entities, self.num_relations,
                                        self.cfg.kg_batch, self.cfg.rel_batch, self.generator)

    def losses(self, step: int) -> tuple[torch.Tensor, dict[str, float | None], dict]:
        cfg, g, dev, model = self.cfg, self.generator, self.device, self.model
        refreshed = self.maybe_refresh(step)
        text, sub, pairs, rels = self.sample()
        e0 = self.entity_inputs(sub.node_ids, refreshed)
        edge_index, edge_type = sub.edge_index.to(dev), sub.edge_type.to(dev)
        out_losses: dict[str, torch.Tensor | None] = dict.fromkeys(LOSS_NAMES)
        if text is not None:
            ids, labels = mask_tokens(text.input_ids, text.attention_mask, self.special_ids,
                                      int(self.tokenizer.mask_token_id), model.lm.word_embeddings.num_embeddings,
                                      g, cfg.mask_prob)
            drop = drop_mentions(len(text.mention_entities), g, cfg.mention_drop)
            nodes = local_index(sub.node_ids, text.mention_entities)
            out = model(ids.to(dev), text.attention_mask.to(dev), text.mention_spans.to(dev), nodes.to(dev), e0,
                        edge_index, edge_type, mention_keep=~drop.to(dev), return_logits=False)
            e_km, z_lm = out.entity_embeddings, out.last_hidden_state
            picked = labels != -100
            if bool(picked.any()):
                logits = model.lm.mlm_logits(z_lm[picked.to(dev)])
                out_losses["L_t"] = token_loss(logits, labels[picked].to(dev))
            true = text.mention_entities[drop]
            if len(true):
                nb = neighbor_pairs(self.graph, true, cfg.neighbor_candidates, g)
                nb = torch.where(nb >= 0, nb, torch.randint(self.num_entities, nb.shape, generator=g))
                neg = torch.randint(self.num_entities, (len(true), cfg.negatives), generator=g)
                cands = torch.cat([true[:, None], nb, neg], dim=1)
                out_losses["L_e"] = entity_loss(model.heads, z_lm, text.mention_spans[drop].to(dev),
                                                cands.to(self.memory.entity.device),
                                                self.memory.entity.to(dev))
        else:
            e_km = model.encode_entities(e0, edge_index, edge_type)
        out_losses["L_c"] = category_loss(model.heads, e_km, self.categories[sub.node_ids].to(dev))
        out_losses["L_r"] = relation_loss(model.heads, e_km, pairs.to(dev), rels.to(dev))
        present = {k: v for k, v in out_losses.items() if v is not None}
        if not present:
            raise RuntimeError("no loss could be computed: the store has no passages, categories or triples")
        total = sum(cfg.weights.of(k) * v for k, v in present.items())
        logged = {k: (float(v.detach()) if v is not None else None) for k, v in out_losses.items()}
        info = {"refresh": refreshed, "nodes": sub.num_nodes, "edges": int(sub.edge_index.size(1)),
                "mentions": 0 if text is None else len(text.mention_entities)}
        return total, logged, info
