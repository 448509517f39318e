"""FewRel episodes and prototypical classification (jaket.evaluation.fewrel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jaket.evaluation.fewrel import (
    instance_features,
    load_fewrel,
    prototype_predict,
    run_episodes,
    sample_episode,
    split_relations,
    tokens_to_text,
    train_adapter,
)
from jaket.evaluation.metrics import mean_ci


def _by_relation(num_rel=8, per=20):
    labels = np.repeat(np.arange(num_rel), per)
    return labels, {r: np.flatnonzero(labels == r) for r in range(num_rel)}


def test_split_is_disjoint_and_covers_every_relation():
    groups = split_relations(16, 2, seed=0)
    assert [len(g) for g in groups] == [8, 8]
    assert not set(groups[0]) & set(groups[1])
    assert sorted(groups[0] + groups[1]) == list(range(16))
    assert split_relations(16, 2, seed=0) == groups
    assert split_relations(16, 2, seed=1) != groups


@pytest.mark.parametrize("n,k,q", [(5, 1, 5), (5, 5, 3), (3, 2, 1)])
def test_episode_shapes_distinct_relations_and_no_overlap(n, k, q):
    labels, by_rel = _by_relation()
    rels, sup, qry = sample_episode(np.random.default_rng(0), by_rel, list(range(8)), n, k, q)
    assert len(set(rels)) == n and sup.shape == (n, k) and qry.shape == (n, q)
    assert not set(sup.ravel()) & set(qry.ravel())
    for i, r in enumerate(rels):
        assert (labels[sup[i]] == r).all() and (labels[qry[i]] == r).all()


def test_episodes_are_deterministic_and_stay_in_the_group():
    _, by_rel = _by_relation()
    group = [1, 3, 4, 6, 7]
    a = sample_episode(np.random.default_rng(5), by_rel, group, 5, 1, 2)
    b = sample_episode(np.random.default_rng(5), by_rel, group, 5, 1, 2)
    assert a[0] == b[0] and (a[1] == b[1]).all() and (a[2] == b[2]).all()
    assert set(a[0]) <= set(group)
    with pytest.raises(ValueError):
        sample_episode(np.random.default_rng(0), by_rel, group, 6, 1, 1)


def test_prototypes_on_a_known_toy():
    support = torch.tensor([[[10.0, 0.0], [9.0, 1.0]], [[0.0, 1.0], [0.1, 0.9]]])
    query = torch.tensor([[8.0, 3.0], [0.2, 0.7], [1.0, 0.6]])
    assert prototype_predict(support, query).tolist() == [0, 1, 0]              # [1, .6] points towards class 0
    assert prototype_predict(support, query, "euclidean").tolist() == [0, 1, 1]  # ... but lies nearer class 1


def test_separable_features_give_perfect_accuracy_and_noise_gives_chance():
    labels, _ = _by_relation(8, 30)
    centers = torch.eye(8) * 10
    x = centers[torch.from_numpy(labels)] + 0.1 * torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(0))
    acc = run_episodes(x, labels, list(range(8)), 5, 1, 3, 50, seed=0)
    assert acc.mean() == 1.0 and len(acc) == 50
    noise = torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(1))
    assert abs(run_episodes(noise, labels, list(range(8)), 5, 5, 5, 300, 0).mean() - 0.2) < 0.06
    assert (run_episodes(x, labels, list(range(8)), 5, 1, 3, 20, 3) == run_episodes(x, labels, list(range(8)), 5, 1, 3, 20, 3)).all()


def test_adapter_learns_on_training_relations_only():
    labels, _ = _by_relation(8, 30)
    g = torch.Generator().manual_seed(0)
    # class signal lives in dims 0..7 with small scale, nuisance in dims 8..15 with large scale
    signal = torch.eye(8)[torch.from_numpy(labels)]
    x = torch.cat([signal, 2 * torch.randn(len(labels), 8, generator=g)], dim=1)
    before = run_episodes(x, labels, [4, 5, 6, 7], 4, 5, 3, 100, seed=0).mean()
    adapter = train_adapter(x, labels, [0, 1, 2, 3], n=4, k=5, q=3, steps=200, lr=1e-2)
    with torch.no_grad():
        after = run_episodes(x + adapter(x), labels, [4, 5, 6, 7], 4, 5, 3, 100, seed=0).mean()
    assert after > before + 0.05


def test_tokens_to_text_spans_and_instance_features():
    text, spans = tokens_to_text(["The", "Cape", "Girardeau", "Bridge", "spans", "it", "."], [[1, 2, 3], [5]])
    assert text[spans[0][0]:spans[0][1]] == "Cape Girardeau Bridge" and text[spans[1][0]:spans[1][1]] == "it"
    pooled = torch.randn(4, 2, 6)
    assert instance_features(pooled).shape == (4, 12)
    assert instance_features(pooled, torch.randn(4, 2, 6)).shape == (4, 24)


def test_mean_ci():
    r = mean_ci([1, 0, 1, 0])
    assert r["mean"] == 0.5 and r["n"] == 4 and 0.5 < r["ci95"] < 0.6


def test_load_real_val_wiki(shared_data):
    d = load_fewrel(shared_data / "eval" / "fewrel" / "val_wiki.json")
    assert len(d.texts) == 11200 and len(d.relations) == 16 and np.bincount(d.labels).tolist() == [700] * 16
    i = int(np.flatnonzero(d.labels == d.relations.index("P177"))[0])
    (hs, he), (ts, te) = d.spans[i]
    assert d.texts[i][hs:he].lower() == "cape girardeau bridge" and d.texts[i][ts:te].lower() == "mississippi river"
