"""Entity classification on CoDEx-M in KG-only mode (LM1 + KM, LM2 unused), fine-grained classes.

Classes: the `top` most frequent CoDEx types among the KG's entities after dropping Q5 'human'; an entity's
label is its most frequent type among those (ties: smaller QID string); entities with none of them are not
classified (they stay in the graph). Split 20/20/60 train/dev/test, stratified per class with a fixed seed.
Classifier: multinomial logistic regression on the frozen entity features (standardised), its L2 weight
chosen on dev. Reported: test accuracy and macro-F1, and the same on the test entities without any text.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from jaket.evaluation.metrics import accuracy, macro_f1


def fine_grained_labels(entity_types: dict[str, list[str]], qids: list[str], top: int = 50,
                        drop: tuple[str, ...] = ("Q5",)) -> tuple[list[str], np.ndarray]:
    """(class QIDs by frequency, label per qid: class index or -1)."""
    counts = Counter(t for q in qids for t in set(entity_types.get(q, [])) if t not in drop)
    classes = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    rank = {t: i for i, t in enumerate(classes)}
    labels = np.full(len(qids), -1, dtype=np.int64)
    for i, q in enumerate(qids):
        mine = [rank[t] for t in entity_types.get(q, []) if t in rank]
        if mine:
            labels[i] = min(mine)
    return classes, labels


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...] = (0.2, 0.2, 0.6), seed: int = 0
                     ) -> list[np.ndarray]:
    """Disjoint index sets over the labelled entities (label >= 0), each class cut by `fractions`."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    cuts = np.cumsum(fractions)[:-1] / sum(fractions)
    for c in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = [0, *np.round(cuts * len(idx)).astype(int).tolist(), len(idx)]
        for p in range(len(fractions)):
            parts[p].extend(idx[bounds[p]:bounds[p + 1]].tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, steps: int = 300,
               seed: int = 0) -> torch.nn.Linear:
    """Full-batch multinomial logistic regression (L-BFGS) with an L2 penalty."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.size(1), num_classes)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return model


def classify(features: torch.Tensor, labels: np.ndarray, splits: list[np.ndarray], no_text: np.ndarray,
             seed: int = 0, grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2)) -> dict:
    train, dev, test = splits
    x = features.float()
    mu, sd = x[train].mean(0), x[train].std(0).clamp(min=1e-6)
    x = (x - mu) / sd
    y = torch.from_numpy(labels)
    num_classes = int(labels.max()) + 1
    best = None
    for wd in grid:
        model = fit_logreg(x[train], y[train], num_classes, wd, seed=seed)
        with torch.no_grad():
            dev_acc = accuracy(model(x[dev]).argmax(1).numpy(), labels[dev])
        if best is None or dev_acc > best[0]:
            best = (dev_acc, wd, model)
    dev_acc, wd, model = best
    with torch.no_grad():
        pred = model(x[test]).argmax(1).numpy()
    gold = labels[test]
    classes = list(range(num_classes))
    sub = no_text[test]
    return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, classes),
            "no_text_accuracy": accuracy(pred[sub], gold[sub]) if sub.any() else None,
            "no_text_macro_f1": macro_f1(pred[sub], gold[sub]) if sub.any() else None,
            "test": int(len(test)), "test_no_text": int(sub.sum()), "dev_accuracy": dev_acc, "weight_decay": wd,
            "majority_accuracy": accuracy(np.full(len(gold), np.bincount(labels[train]).argmax()), gold)}
