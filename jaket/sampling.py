"""Sampling: root entities + multi-hop neighbourhoods over a CSR adjacency held as tensors, and text batches.

Everything on the hot path is vectorised over the frontier (a Python loop runs over hops only) and draws
from an explicit torch.Generator, so a run is deterministic under its seed and resumable (the generator
state is checkpointed). A fan-out of 1 at every hop is a random walk from each root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from jaket.tokens import encode_with_spans


@dataclass
class GraphTensors:
    """The store's CSR (with inverse edges) as torch tensors."""

    indptr: torch.Tensor     # int64 [N + 1]
    neighbors: torch.Tensor  # int64 [E]
    relations: torch.Tensor  # int64 [E]
    inverse: torch.Tensor    # bool  [E]
    num_relations: int

    @classmethod
    def from_csr(cls, csr: object, num_relations: int) -> GraphTensors:
        return cls(indptr=torch.from_numpy(np.asarray(csr.indptr, dtype=np.int64)),
                   neighbors=torch.from_numpy(np.asarray(csr.neighbors, dtype=np.int64)),
                   relations=torch.from_numpy(np.asarray(csr.relations, dtype=np.int64)),
                   inverse=torch.from_numpy(np.asarray(csr.inverse, dtype=bool)),
                   num_relations=num_relations)

    @property
    def num_nodes(self) -> int:
        return len(self.indptr) - 1

    @property
    def targets(self) -> torch.Tensor:
        """int64 [E]: the row (target entity v) of every CSR position, computed once."""
        if getattr(self, "_targets", None) is None:
            self._targets, _ = expand_ranges(self.indptr[1:] - self.indptr[:-1])
        return self._targets

    def degree(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.indptr[nodes + 1] - self.indptr[nodes]

    def edge_type(self, edges: torch.Tensor) -> torch.Tensor:
        """r for a forward edge, r + P for an inverse one (see knowledge.py)."""
        return self.relations[edges] + self.inverse[edges].long() * self.num_relations


@dataclass
class Subgraph:
    node_ids: torch.Tensor    # int64 [n] global entity ids, in order of first appearance (roots first)
    num_roots: int
    edge_index: torch.Tensor  # int64 [2, E] local ids: row 0 = neighbour u (source), row 1 = v (target)
    edge_type: torch.Tensor   # int64 [E]
    edge_ids: torch.Tensor    # int64 [E] positions in the CSR

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)


def first_occurrence_unique(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique values in order of first appearance, and the index of each input value into them."""
    uniq, inverse = torch.unique(values, return_inverse=True)
    first = torch.full((len(uniq),), len(values), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(values)), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return uniq[order], rank[inverse]


def expand_ranges(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ranges of the given lengths: (range index, offset within the range) of every element, i.e.
    repeat_interleave(arange(len), lengths) and the matching 0..len-1 counters (searchsorted is ~100x faster
    than torch.repeat_interleave on CPU for small inputs)."""
    ends = torch.cumsum(lengths, 0)
    total = int(ends[-1]) if len(ends) else 0
    pos = torch.arange(total, device=lengths.device)
    row = torch.searchsorted(ends, pos, right=True)
    return row, pos - (ends - lengths)[row]


def sample_edges(graph: GraphTensors, nodes: torch.Tensor, fanout: int, generator: torch.Generator
                 ) -> torch.Tensor:
    """CSR positions of up to `fanout` edges per node: all of them when deg <= fanout, else `fanout` draws
    with replacement (duplicates removed). Vectorised over `nodes`."""
    deg = graph.degree(nodes)
    start = graph.indptr[nodes]
    small = (deg > 0) & (deg <= fanout)
    # all edges of the low-degree nodes: start + 0..deg-1 via repeat_interleave
    row, within = expand_ranges(deg[small])
    pos_small = start[small][row] + within
    # random edges of the high-degree nodes
    big = deg > fanout
    draws = torch.rand((int(big.sum()), fanout), generator=generator)
    pos_big = (start[big, None] + (draws * deg[big, None]).long()).reshape(-1)
    return torch.unique(torch.cat([pos_small, pos_big]))


def neighbor_pairs(graph: GraphTensors, nodes: torch.Tensor, k: int, generator: torch.Generator
                   ) -> torch.Tensor:
    """k random neighbours per node (with replacement) as [len(nodes), k]; -1 for nodes without edges."""
    deg = graph.degree(nodes)
    draws = torch.rand((len(nodes), k), generator=generator)
    pos = graph.indptr[nodes, None] + (draws * deg[:, None]).long()
    out = graph.neighbors[pos.clamp(max=max(len(graph.neighbors) - 1, 0))] if len(graph.neighbors) else pos
    return torch.where(deg[:, None] > 0, out, torch.full_like(pos, -1))


class NeighborSampler:
    """Multi-hop neighbourhood sampling with a fan-out per hop."""

    def __init__(self, graph: GraphTensors, fanouts: Sequence[int]) -> None:
        self.graph = graph
        self.fanouts = [int(f) for f in fanouts]

    def sample(self, roots: torch.Tensor, generator: torch.Generator) -> Subgraph:
        g = self.graph
        roots, _ = first_occurrence_unique(torch.as_tensor(roots, dtype=torch.long))
        visited = roots
        frontier = roots
        edge_chunks = []
        for fanout in self.fanouts:
            if len(frontier) == 0 or fanout <= 0:
                break
            pos = sample_edges(g, frontier, fanout, generator)
            edge_chunks.append(pos)
            reached = torch.unique(g.neighbors[pos])
            frontier = reached[~torch.isin(reached, visited)]
            visited = torch.cat([visited, frontier])
        # each hop expands only nodes first reached at the previous hop: the hops' edge sets are disjoint
        edges = torch.cat(edge_chunks) if edge_chunks else torch.zeros(0, dtype=torch.long)
        targets = g.targets[edges]              # the target of CSR position p is the row it sits in
        sources = g.neighbors[edges]
        node_ids, local = first_occurrence_unique(torch.cat([roots, targets, sources]))
        m = len(edges)
        local_t, local_s = local[len(roots):len(roots) + m], local[len(roots) + m:]
        return Subgraph(node_ids=node_ids, num_roots=len(roots), edge_index=torch.stack([local_s, local_t]),
                        edge_type=g.edge_type(edges), edge_ids=edges)


def hold_out_relation_targets(sub: Subgraph, num_relations: int, k: int, generator: torch.Generator
                              ) -> tuple[Subgraph, torch.Tensor, torch.Tensor]:
    """Pick up to k forward edges of the subgraph as relation-prediction targets (head, tail local ids and the
    relation id) and remove them, and any other edge joining the same pair by the same relation (its inverse
    twin), from message passing, so the KM cannot read the answer off the edge."""
    forward = torch.nonzero(sub.edge_type < num_relations).squeeze(1)
    if k <= 0 or len(forward) == 0:
        return sub, torch.zeros((0, 2), dtype=torch.long), torch.zeros(0, dtype=torch.long)
    pick = forward[torch.randperm(len(forward), generator=generator)[:k]]
    src, dst = sub.edge_index
    rel = sub.edge_type % num_relations
    n = sub.num_nodes

    def key(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return (torch.minimum(a, b) * n + torch.maximum(a, b)) * num_relations + r

    held = torch.isin(key(src, dst, rel), key(src[pick], dst[pick], rel[pick]))
    keep = ~held
    pairs = torch.stack([dst[pick], src[pick]], dim=1)    # (head v, tail u) of the triple (v, r, u)
    kept = Subgraph(node_ids=sub.node_ids, num_roots=sub.num_roots, edge_index=sub.edge_index[:, keep],
                    edge_type=sub.edge_type[keep], edge_ids=sub.edge_ids[keep])
    return kept, pairs, rel[pick]


@dataclass
class TextBatch:
    input_ids: torch.Tensor       # int64 [B, L]
    attention_mask: torch.Tensor  # int64 [B, L]
    mention_spans: torch.Tensor   # int64 [M, 3]: (row in batch, first token s, last token o), inclusive
    mention_entities: torch.Tensor  # int64 [M] global entity ids
    passage_ids: torch.Tensor     # int64 [B]


def build_text_batch(tokenizer: object, passages: Sequence[tuple[int, str, list[tuple[int, int, int]]]],
                     max_len: int) -> TextBatch:
    """Passages (id, text, [(char_start, char_end, entity_id)]) -> token ids + mention token spans.
    Mentions cut off by truncation are dropped, and so is a mention that would share a token with an
    earlier one (mentions must not overlap)."""
    texts = [p[1] for p in passages]
    char_spans = [np.array([(s, e) for s, e, _ in p[2]], dtype=np.int64).reshape(-1, 2) for p in passages]
    ids, tok_spans = encode_with_spans(tokenizer, texts, char_spans, max_len)
    width = max((len(x) for x in ids), default=0)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    rows, ents = [], []
    for b, (tok, spans, p) in enumerate(zip(ids, tok_spans, passages, strict=True)):
        input_ids[b, :len(tok)] = torch.tensor(tok)
        mask[b, :len(tok)] = 1
        last_end = -1
        for (s, o), (_, _, ent) in zip(spans.tolist(), p[2], strict=True):
            if s < 0 or s <= last_end:
                continue
            rows.append((b, s, o))
            ents.append(ent)
            last_end = o
    spans_t = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
    return TextBatch(input_ids=input_ids, attention_mask=mask, mention_spans=spans_t,
                     mention_entities=torch.tensor(ents, dtype=torch.long),
                     passage_ids=torch.tensor([p[0] for p in passages], dtype=torch.long))


class TextSampler:
    """Random passages (with >= 1 mention) from the store, tokenized with their mention spans."""

    def __init__(self, store: object, tokenizer: object, batch_size: int, max_len: int) -> None:
        self.store, self.tokenizer = store, tokenizer
        self.batch_size, self.max_len = batch_size, max_len
        self.pool = torch.from_numpy(np.asarray(store.passage_ids(), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.pool)

    def sample(self, generator: torch.Generator) -> TextBatch | None:
        if len(self.pool) == 0 or self.batch_size <= 0:
            return None
        pick = torch.randint(len(self.pool), (self.batch_size,), generator=generator)
        passages = self.store.passages_with_mentions(self.pool[pick].numpy())
        return build_text_batch(self.tokenizer, passages, self.max_len)


def sample_roots(num_entities: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct random entity ids (all of them when k >= N)."""
    if k >= num_entities:
        return torch.randperm(num_entities, generator=generator)
    # rejection-free: sample with replacement a few extra, keep first k distinct
    draw = torch.randint(num_entities, (2 * k + 8,), generator=generator)
    uniq, _ = first_occurrence_unique(draw)
    return uniq[:k]


def sample_pretraining_batch(text: TextSampler, sampler: NeighborSampler, num_entities: int, num_relations: int,
                             kg_batch: int, rel_batch: int, generator: torch.Generator
                             ) -> tuple[TextBatch | None, Subgraph, torch.Tensor, torch.Tensor]:
    """One step's inputs: a text batch, the roots (the text's entities + kg_batch random ones) with their sampled
    neighbourhood, and the held-out (head, tail) pairs with their relation for L_r. Training and
    `jaket batch` (which shows what a seed feeds the model) both draw through here."""
    batch = text.sample(generator)
    text_roots = batch.mention_entities if batch is not None else torch.zeros(0, dtype=torch.long)
    roots = torch.cat([text_roots, sample_roots(num_entities, kg_batch, generator)])
    sub = sampler.sample(roots, generator)
    sub, pairs, rels = hold_out_relation_targets(sub, num_relations, rel_batch, generator)
    return batch, sub, pairs, rels
