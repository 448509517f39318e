"""The encoding API for downstream use (the evaluation harness builds on this).

    enc = load_encoder("runs/demo")            # a pretraining run directory, or "none" = no joint pretraining
    kg = enc.attach(KGStore("other.duckdb"))   # a new KG: its memory is recomputed by LM1 from its descriptions
    ent = enc.encode_entities(kg)              # KG-only mode: LM1 (memory) + KM over the whole graph, LM2 unused
    txt = enc.encode_text(["Paris is in France."], [[(0, 5, 12), (12, 18, 3)]], kg)   # Z^LM + mention vectors

Baselines of DESIGN.md part 3: `encode_text(..., kg=None)` is the LM alone; `encode_entities(kg, use_km=False)`
is E^(0) from the memory alone (LM+M); `load_encoder("none")` gives LM+GNN(+M) without joint pretraining.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from jaket.memory import EntityMemory, RefreshSchedule, pool_mentions
from jaket.model import JAKETConfig, JAKETModel, merge_mentions
from jaket.sampling import GraphTensors, build_text_batch, expand_ranges
from jaket.tokens import cache_dir, cached_tokenize, relation_rows


@dataclass
class AttachedKG:
    """A KG prepared for encoding: its graph tensors, its memory and the relation table the KM uses."""

    store_path: Path
    graph: GraphTensors
    memory: EntityMemory
    relations: torch.Tensor          # R [P, F] used by the KM on this KG
    _e_km: torch.Tensor | None = None


@dataclass
class TextEncoding:
    last_hidden_state: torch.Tensor   # Z^LM [B, L, F]
    attention_mask: torch.Tensor      # [B, L]
    input_ids: torch.Tensor           # [B, L]
    mention_spans: torch.Tensor       # [M, 3] (row, s, o) token spans (inclusive) of the kept mentions
    mention_entities: torch.Tensor    # [M] entity ids
    mention_embeddings: torch.Tensor  # [M, F] (Z^LM_s + Z^LM_o) / 2


class JAKETEncoder:
    def __init__(self, model: JAKETModel, tokenizer: object, memory: EntityMemory | None = None,
                 kg_path: str | None = None, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.memory = memory
        self.kg_path = Path(kg_path).resolve() if kg_path else None
        self.device = torch.device(device)

    @property
    def config(self) -> JAKETConfig:
        return self.model.config

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> JAKETEncoder:
        from jaket.lm import load_tokenizer

        run_dir = Path(run_dir)
        cfg = json.loads((run_dir / "config.json").read_text())
        model = JAKETModel.load(run_dir, device)
        memory = EntityMemory.load(run_dir / "memory.safetensors", device)
        return cls(model, load_tokenizer(run_dir / "lm"), memory, cfg.get("kg"), device)

    @classmethod
    def from_lm(cls, lm: str = "default", lm1_layers: int | None = None, km_layers: int = 2, km_heads: int = 4,
                seed: int = 0, device: str | torch.device = "cpu", max_seq_len: int = 128,
                desc_max_len: int = 32) -> JAKETEncoder:
        """No joint pretraining (checkpoint 'none'): the encoder as published, a randomly initialised KM."""
        from jaket.lm import load_tokenizer

        torch.manual_seed(seed)
        config = JAKETConfig(lm=lm, lm1_layers=lm1_layers, km_layers=km_layers, km_heads=km_heads,
                             max_seq_len=max_seq_len, desc_max_len=desc_max_len)
        return cls(JAKETModel.from_lm(config), load_tokenizer(lm), None, None, device)

    # ---- KG side ----
    def attach(self, store: object, progress: bool = False, batch_tokens: int = 8192) -> AttachedKG:
        """Prepare a KG. The pretraining KG keeps the trained memory and relation table; any other KG gets its
        memory recomputed once by LM1 from its descriptions, and R from its relation descriptions."""
        path = Path(store.path).resolve()
        n, p = store.num_entities, store.num_relations
        graph = GraphTensors.from_csr(store.csr(add_inverse=True), p)
        same = (self.memory is not None and self.kg_path == path and self.memory.entity.size(0) == n
                and self.model.km.num_relations == p)
        if same:
            return AttachedKG(path, graph, self.memory, self.model.km.relation.detach())
        memory = self.recompute_memory(store, progress=progress, batch_tokens=batch_tokens)
        return AttachedKG(path, graph, memory, memory.relation)

    def recompute_memory(self, store: object, progress: bool = False, batch_tokens: int = 8192) -> EntityMemory:
        """E^context (and relation encodings) of a KG's descriptions by the current LM1."""
        max_len = self.config.desc_max_len
        ent = cached_tokenize(store.path, "entity", self.tokenizer, store.entity_descriptions(), max_len)
        rel = cached_tokenize(store.path, "relation", self.tokenizer, relation_rows(store), max_len)
        return EntityMemory.build_cached(cache_dir(store.path), self.model.lm, ent, rel,
                                         int(self.tokenizer.pad_token_id), RefreshSchedule(), batch_tokens,
                                         progress=progress)

    @torch.inference_mode()
    def encode_entities(self, kg: AttachedKG, use_km: bool = True) -> torch.Tensor:
        """[N, F]: E^KM over the whole graph (KG-only mode), or E^(0) from the memory when use_km=False."""
        e0 = kg.memory.entity.to(self.device)
        if not use_km:
            return e0.clone()
        if kg._e_km is None:
            km = self.model.km
            saved = km.relation
            try:
                km.relation = torch.nn.Parameter(kg.relations.to(self.device), requires_grad=False)
                g = kg.graph
                targets, _ = expand_ranges(g.indptr[1:] - g.indptr[:-1])
                edge_index = torch.stack([g.neighbors, targets]).to(self.device)
                edge_type = g.edge_type(torch.arange(len(g.neighbors))).to(self.device)
                kg._e_km = km(e0, edge_index, edge_type)
            finally:
                km.relation = saved
        return kg._e_km

    # ---- text side ----
    @torch.inference_mode()
    def encode_text(self, texts: list[str], mentions: list[list[tuple[int, int, int]]] | None = None,
                    kg: AttachedKG | None = None, max_len: int | None = None, batch_size: int = 32
                    ) -> TextEncoding:
        """Z^LM of texts with their mentions [(char_start, char_end, entity_id)]. With `kg`, the KM embeddings
        of the mentioned entities are merged at their tokens (JAKET); without, the plain encoder (LM)."""
        mentions = mentions or [[] for _ in texts]
        max_len = max_len or self.config.max_seq_len
        parts = []
        for lo in range(0, len(texts), batch_size):
            rows = [(i, texts[i], sorted(mentions[i])) for i in range(lo, min(lo + batch_size, len(texts)))]
            parts.append(self._encode_batch(rows, kg, max_len))
        width = max(p.last_hidden_state.size(1) for p in parts)
        pad = int(self.tokenizer.pad_token_id)

        def padded(t: torch.Tensor, value: float) -> torch.Tensor:
            shape = (t.size(0), width - t.size(1), *t.shape[2:])
            return torch.cat([t, torch.full(shape, value, dtype=t.dtype, device=t.device)], dim=1)

        offsets = torch.cumsum(torch.tensor([0] + [p.input_ids.size(0) for p in parts[:-1]]), 0)
        spans = torch.cat([p.mention_spans + torch.tensor([int(o), 0, 0], device=p.mention_spans.device)
                           for p, o in zip(parts, offsets, strict=True)])
        return TextEncoding(
            last_hidden_state=torch.cat([padded(p.last_hidden_state, 0.0) for p in parts]),
            attention_mask=torch.cat([padded(p.attention_mask, 0) for p in parts]),
            input_ids=torch.cat([padded(p.input_ids, pad) for p in parts]),
            mention_spans=spans, mention_entities=torch.cat([p.mention_entities for p in parts]),
            mention_embeddings=torch.cat([p.mention_embeddings for p in parts]))

    def _encode_batch(self, rows: list, kg: AttachedKG | None, max_len: int) -> TextEncoding:
        batch = build_text_batch(self.tokenizer, rows, max_len)
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        spans = batch.mention_spans.to(self.device)
        lm = self.model.lm
        if kg is None:
            z_lm = lm(ids, mask)
        else:  # Z' = LayerNorm(Z^merge) at every position, also in a batch without mentions (as in training)
            e_km = self.encode_entities(kg)
            z = lm.run_lm1(ids, mask)
            z_prime = self.model.merge_norm(merge_mentions(z, spans, e_km[batch.mention_entities.to(self.device)]))
            z_lm = lm.run_lm2(z_prime, mask)
        if len(spans):
            emb = pool_mentions(z_lm[spans[:, 0]], spans[:, 1:])
        else:
            emb = z_lm.new_zeros((0, z_lm.size(-1)))
        return TextEncoding(z_lm, mask, ids, spans, batch.mention_entities, emb)


def load_encoder(checkpoint: str | os.PathLike, lm: str = "default", device: str | torch.device = "cpu",
                 **kwargs: object) -> JAKETEncoder:
    """A run directory -> the jointly pretrained encoder; 'none' -> the baseline encoder `lm`."""
    if str(checkpoint) == "none":
        return JAKETEncoder.from_lm(lm, device=device, **kwargs)
    return JAKETEncoder.from_run(checkpoint, device)
