"""Sampling: correctness against the CSR, determinism under a seed, vectorisation, text batches."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jaket.sampling import (
    GraphTensors,
    NeighborSampler,
    build_text_batch,
    first_occurrence_unique,
    hold_out_relation_targets,
    sample_roots,
)

pytest_plugins = ["tests.jaket_fixtures"]
pytestmark = pytest.mark.usefixtures("one_thread")


def random_graph(n: int, e: int, p: int, seed: int = 0) -> GraphTensors:
    rng = np.random.default_rng(seed)
    h, t, r = rng.integers(n, size=e), rng.integers(n, size=e), rng.integers(p, size=e)
    src, dst = np.concatenate([h, t]), np.concatenate([t, h])
    rel, inv = np.concatenate([r, r]), np.concatenate([np.zeros(e, bool), np.ones(e, bool)])
    order = np.lexsort((dst, src))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    csr = SimpleNamespace(indptr=indptr, neighbors=dst[order], relations=rel[order], inverse=inv[order])
    return GraphTensors.from_csr(csr, p)


def test_first_occurrence_unique():
    vals = torch.tensor([5, 3, 5, 9, 3, 1])
    uniq, idx = first_occurrence_unique(vals)
    assert uniq.tolist() == [5, 3, 9, 1]
    assert torch.equal(uniq[idx], vals)


def test_subgraph_edges_are_real_and_local_ids_consistent():
    g = random_graph(500, 3000, 7)
    roots = torch.tensor([3, 17, 42, 99])
    sub = NeighborSampler(g, [5, 3]).sample(roots, torch.Generator().manual_seed(1))
    assert sub.node_ids[:4].tolist() == roots.tolist() and sub.num_roots == 4
    assert len(torch.unique(sub.node_ids)) == sub.num_nodes
    src, dst = sub.node_ids[sub.edge_index[0]], sub.node_ids[sub.edge_index[1]]
    # the edge at CSR position p goes from row(p) (target v) to neighbors[p] (source u)
    rows = torch.searchsorted(g.indptr, sub.edge_ids, right=True) - 1
    assert torch.equal(dst, rows) and torch.equal(src, g.neighbors[sub.edge_ids])
    assert torch.equal(sub.edge_type, g.relations[sub.edge_ids] + 7 * g.inverse[sub.edge_ids].long())
    # fan-out respected: at most 5 sampled edges into each root
    into_roots = torch.bincount(sub.edge_index[1][sub.edge_index[1] < 4], minlength=4)
    assert (into_roots <= 5).all() and (into_roots > 0).all()


def test_low_degree_nodes_keep_all_their_edges():
    g = random_graph(50, 40, 3)
    deg = g.degree(torch.arange(50))
    node = int(torch.nonzero((deg > 0) & (deg <= 4))[0])
    sub = NeighborSampler(g, [4]).sample(torch.tensor([node]), torch.Generator().manual_seed(0))
    assert len(sub.edge_ids) == int(deg[node])


def test_sampler_is_deterministic_under_a_seed():
    g = random_graph(1000, 8000, 5)
    s = NeighborSampler(g, [4, 2, 2])
    roots = torch.arange(0, 1000, 37)
    a = s.sample(roots, torch.Generator().manual_seed(7))
    b = s.sample(roots, torch.Generator().manual_seed(7))
    c = s.sample(roots, torch.Generator().manual_seed(8))
    assert torch.equal(a.node_ids, b.node_ids) and torch.equal(a.edge_index, b.edge_index)
    assert not (len(a.edge_ids) == len(c.edge_ids) and torch.equal(a.edge_ids, c.edge_ids))
    assert torch.equal(sample_roots(1000, 16, torch.Generator().manual_seed(3)),
                       sample_roots(1000, 16, torch.Generator().manual_seed(3)))
    assert len(torch.unique(sample_roots(1000, 16, torch.Generator().manual_seed(3)))) == 16


def test_sampler_is_vectorised():
    """The number of Python-level calls does not grow with the batch (no per-node Python loop), and a large
    batch stays fast."""
    import sys

    g = random_graph(100_000, 400_000, 50)
    s = NeighborSampler(g, [10, 5])

    def calls(k: int) -> int:
        roots = torch.randperm(100_000, generator=torch.Generator().manual_seed(k))[:k]
        gen = torch.Generator().manual_seed(0)
        count = 0

        def prof(frame, event, arg):
            nonlocal count
            if event in ("call", "c_call"):
                count += 1

        sys.setprofile(prof)
        try:
            s.sample(roots, gen)
        finally:
            sys.setprofile(None)
        return count

    small, big = calls(16), calls(4096)
    assert big <= small + 5, (small, big)
    t = time.perf_counter()
    sub = s.sample(torch.randperm(100_000)[:2048], torch.Generator().manual_seed(0))
    assert time.perf_counter() - t < 5.0 and sub.num_nodes > 15_000


def test_hold_out_removes_target_edges_and_their_twins():
    g = random_graph(300, 1500, 4)
    sub = NeighborSampler(g, [6, 3]).sample(torch.arange(10), torch.Generator().manual_seed(2))
    kept, pairs, rels = hold_out_relation_targets(sub, 4, 8, torch.Generator().manual_seed(2))
    assert len(pairs) == 8 and (rels < 4).all()
    heads, tails = kept.node_ids[kept.edge_index[1]], kept.node_ids[kept.edge_index[0]]
    krel = kept.edge_type % 4
    for (h, t), r in zip(pairs.tolist(), rels.tolist(), strict=True):
        gh, gt = int(sub.node_ids[h]), int(sub.node_ids[t])
        same = (((heads == gh) & (tails == gt)) | ((heads == gt) & (tails == gh))) & (krel == r)
        assert not same.any()
        # the target is a real triple (h, r, t): a forward CSR edge in h's row pointing at t
        row = slice(int(g.indptr[gh]), int(g.indptr[gh + 1]))
        hit = (g.neighbors[row] == gt) & (g.relations[row] == r) & ~g.inverse[row]
        assert hit.any()


def test_text_batch_token_spans_cover_the_mentions(tiny_bert, tiny_store):
    from jaket.lm import load_tokenizer
    from kg_store.store import KGStore

    tok = load_tokenizer(tiny_bert)
    with KGStore(tiny_store) as store:
        passages = store.passages_with_mentions([0, 5, 120])
        labels = dict(store.query("SELECT entity_id, label FROM entities"))
    batch = build_text_batch(tok, passages, max_len=64)
    assert len(batch.mention_spans) == sum(len(p[2]) for p in passages)
    for (row, s, o), ent in zip(batch.mention_spans.tolist(), batch.mention_entities.tolist(), strict=True):
        text = tok.decode(batch.input_ids[row, s:o + 1])
        assert text == labels[ent].lower()
    short = build_text_batch(tok, passages, max_len=4)            # truncation drops mentions cut off
    assert (short.mention_spans[:, 2] < 3).all()


def test_overlapping_mentions_keep_the_first(tiny_bert):
    from jaket.lm import load_tokenizer

    tok = load_tokenizer(tiny_bert)
    batch = build_text_batch(tok, [(0, "New York City is big", [(0, 8, 1), (4, 13, 2), (17, 20, 3)])], 32)
    assert batch.mention_entities.tolist() == [1, 3]
