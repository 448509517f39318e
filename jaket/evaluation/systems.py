"""The four systems compared by `jaket-eval`, on top of jaket.encode (same data, same seeds, frozen encoders).

    lm        the encoder alone. Text: Z^LM of the plain encoder. Entities: the encoder's mean-pooled
              embedding of the entity's description (all layers), no graph.
    lm+gnn    a KM (randomly initialised, no joint pretraining) over those description embeddings (and the
              relation descriptions' embeddings), LATE fusion: its E^KM is given to the task head beside the
              plain encoder's text features; nothing is merged into the text.
    lm+gnn+m  the JAKET architecture without joint pretraining (`load_encoder("none")`): the context memory
              E^context (LM1 at the description's mention span) feeds the KM, and E^KM is merged at the
              mention tokens before LM2 (early fusion); entities = E^KM (KG-only mode, LM2 unused).
    jaket     the same with a `jaket-train` run directory: pretrained LM, KM and merge norm.

Every encoder stays frozen; the tasks train only small heads on the cached features (CPU budget).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from jaket.encode import JAKETEncoder, load_encoder
from jaket.model import merge_mentions
from jaket.sampling import GraphTensors
from jaket.tokens import encode_with_spans, relation_rows
from pipelines.progress import progress

SYSTEMS = ("lm", "lm+gnn", "lm+gnn+m", "jaket")


def run_km(km: torch.nn.Module, e0: torch.Tensor, relations: torch.Tensor, graph: GraphTensors) -> torch.Tensor:
    """E^KM of the whole graph from node features e0 [N, F] and a relation table [P, F] (KG-only mode)."""
    saved = km.relation
    try:
        km.relation = torch.nn.Parameter(relations.to(e0), requires_grad=False)
        targets = torch.repeat_interleave(torch.arange(graph.num_nodes), graph.indptr[1:] - graph.indptr[:-1])
        edge_index = torch.stack([graph.neighbors, targets]).to(e0.device)
        edge_type = graph.edge_type(torch.arange(len(graph.neighbors))).to(e0.device)
        with torch.inference_mode():
            return km(e0, edge_index, edge_type).clone()
    finally:
        km.relation = saved


def span_mean(z: torch.Tensor, mask: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Mean of z [B, L, F] over each (s, o) inclusive token span in spans [B, S, 2] -> [B, S, F]; a span of
    (-1, -1) (missing / truncated) gives zeros."""
    pos = torch.arange(z.size(1), device=z.device)
    inside = (pos[None, None, :] >= spans[..., :1]) & (pos[None, None, :] <= spans[..., 1:]) & (spans[..., :1] >= 0)
    inside = inside & mask.bool()[:, None, :]
    w = inside.to(z.dtype)
    return torch.einsum("bsl,blf->bsf", w, z) / w.sum(-1, keepdim=True).clamp(min=1)


class EvalSystem:
    def __init__(self, name: str, checkpoint: str = "none", lm: str = "default", seed: int = 0,
                 work: str | os.PathLike | None = None, max_len: int = 128) -> None:
        if name not in SYSTEMS:
            raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
        if (name == "jaket") == (str(checkpoint) == "none"):
            raise ValueError("--system jaket needs a run directory as --checkpoint; the baselines take 'none'")
        self.name, self.checkpoint, self.seed, self.max_len = name, str(checkpoint), seed, max_len
        self.encoder: JAKETEncoder = load_encoder(checkpoint, lm=lm, seed=seed)
        self.tokenizer = self.encoder.tokenizer
        self.work = Path(work) if work else None
        self._entities: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        if str(checkpoint) == "none":
            self.fingerprint = f"none-{lm}-{seed}"
        else:
            st = (Path(checkpoint) / "model.safetensors").stat()
            self.fingerprint = hashlib.sha1(f"{Path(checkpoint).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
                                            ).hexdigest()[:12]

    @property
    def early_fusion(self) -> bool:
        return self.name in ("lm+gnn+m", "jaket")

    @property
    def uses_graph(self) -> bool:
        return self.name != "lm"

    # ---- caching of features under WORK/cache ----
    def cached(self, key: str, fn: Callable[[], object], plain: bool = False) -> object:
        """fn() cached under WORK/cache. `plain`: the result depends on the plain encoder only, shared by the
        systems without early fusion (lm and lm+gnn load the same encoder)."""
        if self.work is None:
            return fn()
        who = "plain" if plain and not self.early_fusion else self.name.replace("+", "_")
        path = self.work / "cache" / f"{who}-{self.fingerprint}-{key}.pt"
        if path.exists():
            return torch.load(path, weights_only=True)   # tensors and tuples only: no arbitrary unpickling
        value = fn()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        torch.save(value, tmp)
        os.replace(tmp, path)
        return value

    # ---- entity side ----
    @torch.inference_mode()
    def embed_texts(self, texts: list[str], max_len: int = 32, batch_size: int = 256) -> torch.Tensor:
        """The plain encoder's mean-pooled embedding of each text (all layers) -> [n, F]."""
        lm = self.encoder.model.lm
        out = torch.zeros(len(texts), lm.hidden_size)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for lo in progress(range(0, len(texts), batch_size), desc=f"{self.name}: embed {len(texts)} texts",
                           unit="batch"):
            idx = order[lo:lo + batch_size]
            enc = self.tokenizer([texts[i] or "" for i in idx], truncation=True, max_length=max_len,
                                 padding=True, return_tensors="pt")
            z = lm(enc["input_ids"], enc["attention_mask"])
            m = enc["attention_mask"].unsqueeze(-1).to(z.dtype)
            out[torch.as_tensor(idx)] = (z * m).sum(1) / m.sum(1).clamp(min=1)
        return out

    def entity_features(self, store: object) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(E_text [N, F], E^KM [N, F] or None for 'lm') of a store, cached per store file."""
        path = str(Path(store.path).resolve())
        if path in self._entities:
            return self._entities[path]
        key = "ent-" + self.store_key(store)
        if self.early_fusion:
            self._entities[path] = self.cached(key, lambda: self._memory_km(store))
            return self._entities[path]
        e_text, rel = self.cached(key, lambda: (
            self.embed_texts([r[1] for r in store.entity_descriptions()]),
            self.embed_texts([r[1] for r in relation_rows(store)])), plain=True)
        e_km = None
        if self.name == "lm+gnn":
            graph = GraphTensors.from_csr(store.csr(add_inverse=True), store.num_relations)
            e_km = run_km(self.encoder.model.km, e_text, rel, graph)
        self._entities[path] = (e_text, e_km)
        return self._entities[path]

    @staticmethod
    def store_key(store: object) -> str:
        st = Path(store.path).stat()
        return hashlib.sha1(f"{Path(store.path).name}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]

    def _memory_km(self, store: object) -> tuple[torch.Tensor, torch.Tensor]:
        kg = self.encoder.attach(store, progress=True)
        return kg.memory.entity.clone(), self.encoder.encode_entities(kg, use_km=True).clone()

    # ---- text side ----
    @torch.inference_mode()
    def encode_spans(self, texts: list[str], spans: list[list[tuple[int, int]]], entities: list[list[int]] | None
                     = None, e_km: torch.Tensor | None = None, batch_size: int = 64
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Z^LM of texts, mean-pooled over each char span [B, S, F] and over the whole text [B, F].

        With early fusion and `e_km`, E^KM of each span's entity (entities[i][j] >= 0) is merged at its tokens
        before LM2; otherwise the plain encoder runs."""
        lm, model = self.encoder.model.lm, self.encoder.model
        n_spans = max((len(s) for s in spans), default=0)
        pooled = torch.zeros(len(texts), n_spans, lm.hidden_size)
        whole = torch.zeros(len(texts), lm.hidden_size)
        order = np.argsort([len(t) for t in texts], kind="stable")
        pad = int(self.tokenizer.pad_token_id)
        for lo in progress(range(0, len(texts), batch_size), desc=f"{self.name}: encode {len(texts)} texts",
                           unit="batch"):
            idx = order[lo:lo + batch_size]
            cs = [np.array(spans[i], dtype=np.int64).reshape(-1, 2) for i in idx]
            ids, tok = encode_with_spans(self.tokenizer, [texts[i] for i in idx], cs, self.max_len)
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            tok_spans = torch.full((len(ids), n_spans, 2), -1, dtype=torch.long)
            for b, (x, t) in enumerate(zip(ids, tok, strict=True)):
                input_ids[b, :len(x)] = torch.tensor(x)
                mask[b, :len(x)] = 1
                tok_spans[b, :len(t)] = torch.from_numpy(t)
            if self.early_fusion and e_km is not None and entities is not None:
                rows, ents = [], []
                for b, i in enumerate(idx):
                    for j, e in enumerate(entities[i]):
                        if e is not None and e >= 0 and tok_spans[b, j, 0] >= 0:
                            rows.append((b, int(tok_spans[b, j, 0]), int(tok_spans[b, j, 1])))
                            ents.append(int(e))
                z = lm.run_lm1(input_ids, mask)
                if rows:
                    z = merge_mentions(z, torch.tensor(rows), e_km[torch.tensor(ents)])
                z = lm.run_lm2(model.merge_norm(z), mask)     # Z' = LayerNorm(Z^merge) at every position
            else:
                z = lm(input_ids, mask)
            sel = torch.as_tensor(idx)
            pooled[sel] = span_mean(z, mask, tok_spans)
            m = mask.unsqueeze(-1).to(z.dtype)
            whole[sel] = (z * m).sum(1) / m.sum(1)
        return pooled, whole
