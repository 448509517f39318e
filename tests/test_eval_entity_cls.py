"""CoDEx fine-grained labels, the 20/20/60 split, the classifier and the metrics (jaket.evaluation.entity_cls)."""

from __future__ import annotations

import numpy as np
import torch

from jaket.evaluation.entity_cls import classify, fine_grained_labels, stratified_split
from jaket.evaluation.metrics import accuracy, macro_f1


def test_fine_grained_labels_drop_human_and_take_the_most_frequent_type():
    types = {"Q1": ["Q5"], "Q2": ["Q5", "Qa"], "Q3": ["Qa", "Qb"], "Q4": ["Qb", "Qc"], "Q6": ["Qb"],
             "Q7": ["Qc", "Qd"], "Q8": ["Qa"], "Q9": []}
    qids = ["Q1", "Q2", "Q3", "Q4", "Q6", "Q7", "Q8", "Q9", "Q10"]
    classes, labels = fine_grained_labels(types, qids, top=3)
    # counts without Q5: Qa 3, Qb 3, Qc 2, Qd 1 -> top 3 = Qa, Qb (tie by QID), Qc
    assert classes == ["Qa", "Qb", "Qc"]
    assert labels.tolist() == [-1, 0, 0, 1, 1, 2, 0, -1, -1]
    assert "Q5" not in fine_grained_labels(types, qids, top=10)[0]


def test_split_is_disjoint_complete_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    labels = np.concatenate([labels, [-1, -1]])
    train, dev, test = stratified_split(labels, seed=0)
    allidx = np.concatenate([train, dev, test])
    assert len(allidx) == len(set(allidx.tolist())) == 100
    assert set(allidx.tolist()) == set(np.flatnonzero(labels >= 0).tolist())
    assert (len(train), len(dev), len(test)) == (20, 20, 60)
    for c, n in enumerate([50, 30, 15, 5]):
        assert abs((labels[train] == c).sum() - 0.2 * n) <= 1 and abs((labels[test] == c).sum() - 0.6 * n) <= 1
    again = stratified_split(labels, seed=0)
    assert all((a == b).all() for a, b in zip(again, (train, dev, test), strict=True))
    assert not (stratified_split(labels, seed=1)[0] == train).all()


def test_metrics_on_hand_made_cases():
    gold = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])
    assert accuracy(pred, gold) == 4 / 6
    # F1: class 0 = 2*2/(4+1+1) = 2/3; class 1 = 2*2/(4+1) = 0.8; class 2 = 0
    assert abs(macro_f1(pred, gold) - (2 / 3 + 0.8 + 0) / 3) < 1e-9
    assert macro_f1(gold, gold) == 1.0


def test_classifier_on_separable_features():
    gen = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(3), 40)
    x = torch.eye(3)[torch.from_numpy(labels)] * 3 + 0.3 * torch.randn(120, 3, generator=gen)
    x = torch.cat([x, torch.randn(120, 5, generator=gen)], 1)
    no_text = np.zeros(120, dtype=bool)
    no_text[::4] = True
    res = classify(x, labels, stratified_split(labels, seed=0), no_text)
    assert res["accuracy"] > 0.95 and res["macro_f1"] > 0.95 and res["test"] == 72
    assert res["no_text_accuracy"] is not None and res["test_no_text"] > 0
