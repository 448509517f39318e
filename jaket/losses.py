"""The four self-supervised pretraining losses and their heads (DESIGN.md part 1, "Pretraining tasks").

L_c: entity category from E^KM.  L_r: relation between an entity pair from their E^KM.
L_t: BERT masked-token prediction (15% of tokens; 80% [MASK], 10% random, 10% kept) from Z^LM.
L_e: masked entity prediction: q = g((Z^LM_s + Z^LM_o) / 2), scored against E^context of the true entity,
its graph neighbours and random entities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOSS_NAMES = ("L_c", "L_r", "L_t", "L_e")


@dataclass
class LossWeights:
    category: float = 1.0
    relation: float = 1.0
    token: float = 1.0
    entity: float = 1.0

    def of(self, name: str) -> float:
        return {"L_c": self.category, "L_r": self.relation, "L_t": self.token, "L_e": self.entity}[name]


class PretrainingHeads(nn.Module):
    def __init__(self, hidden: int, num_categories: int, num_relations: int) -> None:
        super().__init__()
        self.category = nn.Linear(hidden, max(num_categories, 1))
        self.relation = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, max(num_relations, 1)))
        self.g1 = nn.Linear(hidden, hidden)   # W_1
        self.g2 = nn.Linear(hidden, hidden)   # W_2

    def g(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) = GELU(x W_1) W_2."""
        return self.g2(F.gelu(self.g1(x)))


def category_loss(heads: PretrainingHeads, e_km: torch.Tensor, categories: torch.Tensor) -> torch.Tensor | None:
    """L_c = CE(category head(E^KM_e), category(e)) over sampled entities that have a category."""
    keep = categories >= 0
    if not bool(keep.any()):
        return None
    return F.cross_entropy(heads.category(e_km[keep]), categories[keep])


def relation_loss(heads: PretrainingHeads, e_km: torch.Tensor, pairs: torch.Tensor, relations: torch.Tensor
                  ) -> torch.Tensor | None:
    """L_r = CE(relation head([E^KM_h ; E^KM_t]), r) for held-out triples (h, r, t) of the subgraph."""
    if len(pairs) == 0:
        return None
    return F.cross_entropy(heads.relation(torch.cat([e_km[pairs[:, 0]], e_km[pairs[:, 1]]], dim=-1)), relations)


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor, mask_id: int,
                vocab_size: int, generator: torch.Generator, prob: float = 0.15
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick 15% of the real tokens; 80% -> [MASK], 10% -> random token, 10% unchanged.
    Returns (masked ids, labels with -100 where not picked). At least one token is picked per batch."""
    candidates = (attention_mask > 0) & ~torch.isin(input_ids, special_ids)
    u = torch.rand(input_ids.shape, generator=generator)
    picked = candidates & (u < prob)
    if not bool(picked.any()) and bool(candidates.any()):
        picked = candidates & (u == u.masked_fill(~candidates, 2.0).min())
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    v = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    ids = torch.where(picked & (v < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    ids = torch.where(picked & (v >= 0.8) & (v < 0.9), random_ids, ids)
    return ids, labels


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """L_t = CE over the picked tokens."""
    if not bool((labels != -100).any()):
        return None
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


def drop_mentions(num_mentions: int, generator: torch.Generator, prob: float = 0.15) -> torch.Tensor:
    """Bool [M]: the mentions dropped for L_e (15%; at least one when there is any mention)."""
    u = torch.rand(num_mentions, generator=generator)
    drop = u < prob
    if num_mentions and not bool(drop.any()):
        drop[int(torch.argmin(u))] = True
    return drop


def entity_loss(heads: PretrainingHeads, z_lm: torch.Tensor, spans: torch.Tensor, candidates: torch.Tensor,
                e_context: torch.Tensor) -> torch.Tensor | None:
    """L_e for dropped mentions spans [D, 3] (row, s, o); candidates [D, C] global ids with the true entity in
    column 0 (-1 = padding, and repeats of the true entity are masked out)."""
    if len(spans) == 0:
        return None
    q = heads.g((z_lm[spans[:, 0], spans[:, 1]] + z_lm[spans[:, 0], spans[:, 2]]) / 2)  # q = g((Z_s + Z_o)/2)
    cand = e_context[candidates.clamp(min=0)]                                             # E^context_c
    scores = torch.einsum("df,dcf->dc", q, cand)                                          # <q, E^context_c>
    invalid = (candidates < 0) | (candidates == candidates[:, :1])
    invalid[:, 0] = False
    scores = scores.masked_fill(invalid, float("-inf"))
    return F.cross_entropy(scores, torch.zeros(len(spans), dtype=torch.long, device=scores.device))
