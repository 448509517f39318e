"""The JAKET model: LM1 on text -> KM over the sampled subgraph (E^(0) from the memory) -> merge -> LM2.

    Z = LM1(x);  E^KM = KM(E^(0), subgraph);  Z^merge_k = Z_k + E^KM_{e_m} for k in mention m;
    Z' = LayerNorm(Z^merge);  Z^LM = LM2(Z')
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers.utils import ModelOutput

from jaket.knowledge import KnowledgeModule
from jaket.lm import LanguageModule
from jaket.losses import PretrainingHeads
from jaket.sampling import expand_ranges


@dataclass
class JAKETConfig:
    lm: str = "default"              # encoder name or path the run started from
    lm1_layers: int | None = None    # k; None = half of the encoder's layers
    km_layers: int = 2               # L
    km_heads: int = 4                # K
    km_dropout: float = 0.0
    num_entities: int = 0
    num_relations: int = 0
    num_categories: int = 0
    max_seq_len: int = 64
    desc_max_len: int = 32
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> JAKETConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class JAKETOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None    # Z^LM [B, L, F]
    lm1_hidden_state: torch.Tensor | None = None     # Z [B, L, F]
    merged_hidden_state: torch.Tensor | None = None  # Z' = LayerNorm(Z^merge) [B, L, F]
    entity_embeddings: torch.Tensor | None = None    # E^KM [n, F] for the subgraph's nodes
    mlm_logits: torch.Tensor | None = None           # [B, L, V] when asked


def merge_mentions(z: torch.Tensor, spans: torch.Tensor, entity_emb: torch.Tensor) -> torch.Tensor:
    """Z^merge_k = Z_k + E^KM_{e_{m_i}} for every token k in s_i..o_i of each mention (spans [M, 3] = row, s, o;
    entity_emb [M, F]); every other position keeps Z_k."""
    if len(spans) == 0:
        return z
    which, within = expand_ranges(spans[:, 2] - spans[:, 1] + 1)
    rows, cols = spans[which, 0], spans[which, 1] + within
    add = torch.zeros_like(z).index_put((rows, cols), entity_emb[which], accumulate=True)
    return z + add


class JAKETModel(nn.Module):
    def __init__(self, config: JAKETConfig, lm: LanguageModule) -> None:
        super().__init__()
        self.config = config
        self.lm = lm
        hidden = lm.hidden_size
        config.lm1_layers = lm.lm1_layers
        self.km = KnowledgeModule(hidden, config.num_relations, config.km_layers, config.km_heads,
                                  config.km_dropout)
        self.merge_norm = nn.LayerNorm(hidden, eps=getattr(lm.config, "layer_norm_eps", 1e-12))
        self.heads = PretrainingHeads(hidden, config.num_categories, config.num_relations)

    @property
    def hidden_size(self) -> int:
        return self.lm.hidden_size

    @classmethod
    def from_lm(cls, config: JAKETConfig) -> JAKETModel:
        """A fresh JAKET model around a pretrained encoder (KM and heads randomly initialised)."""
        return cls(config, LanguageModule.from_pretrained(config.lm, config.lm1_layers))

    def encode_entities(self, e0: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor
                        ) -> torch.Tensor:
        """KG-only mode: E^KM = KM(E^(0)) (LM2 unused)."""
        return self.km(e0, edge_index, edge_type)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mention_spans: torch.Tensor,
                mention_nodes: torch.Tensor, e0: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                mention_keep: torch.Tensor | None = None, return_logits: bool = True) -> JAKETOutput:
        """mention_nodes [M] index rows of e0 (the subgraph's local ids); mention_keep [M] False = dropped
        (no KM embedding added at its tokens)."""
        z = self.lm.run_lm1(input_ids, attention_mask)                       # Z = LM1(X_embed)
        e_km = self.km(e0, edge_index, edge_type)                            # E^KM
        if mention_keep is not None:
            mention_spans, mention_nodes = mention_spans[mention_keep], mention_nodes[mention_keep]
        z_merge = merge_mentions(z, mention_spans, e_km[mention_nodes])      # Z^merge
        z_prime = self.merge_norm(z_merge)                                   # Z' = LayerNorm(Z^merge)
        z_lm = self.lm.run_lm2(z_prime, attention_mask)                      # Z^LM = LM2(Z')
        logits = self.lm.mlm_logits(z_lm) if return_logits else None
        return JAKETOutput(last_hidden_state=z_lm, lm1_hidden_state=z, merged_hidden_state=z_prime,
                           entity_embeddings=e_km, mlm_logits=logits)

    # ---- persistence: safetensors + JSON only ----
    def save(self, run_dir: str | os.PathLike) -> None:
        """RUN_DIR/model.safetensors (all weights; tied tensors stored once) + RUN_DIR/lm/ (HF config and
        tokenizer files, so the run directory is self-contained)."""
        from safetensors.torch import save_model

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.lm.config.save_pretrained(run_dir / "lm")
        save_model(self, str(run_dir / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> JAKETModel:
        from safetensors import safe_open
        from safetensors.torch import load_model
        from transformers import AutoConfig

        run_dir = Path(run_dir)
        cfg = json.loads((run_dir / "config.json").read_text())
        config = JAKETConfig.from_dict(cfg["model"])
        with safe_open(str(run_dir / "model.safetensors"), "pt") as handle:
            config.num_relations = handle.get_slice("km.relation").get_shape()[0]
        hf_config = AutoConfig.from_pretrained(run_dir / "lm")
        model = cls(config, LanguageModule.from_config(hf_config, config.lm1_layers))
        load_model(model, str(run_dir / "model.safetensors"), strict=True, device=str(device))
        return model.to(device)
