"""Accuracy with a 95% interval, macro-F1, Hits@1."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def mean_ci(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean and 95% normal-approximation interval half-width (1.96 * sd / sqrt(n)) over per-item scores."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "n": 0}
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "ci95": 1.96 * sd / math.sqrt(len(v)), "n": int(len(v))}


def accuracy(pred: Sequence[int] | np.ndarray, gold: Sequence[int] | np.ndarray) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else float("nan")


def macro_f1(pred: Sequence[int] | np.ndarray, gold: Sequence[int] | np.ndarray,
             labels: Sequence[int] | None = None) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: the classes present in gold or pred)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    labels = np.unique(np.concatenate([gold, pred])) if labels is None else np.asarray(labels)
    f1 = []
    for c in labels:
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1)) if f1 else float("nan")


def hits_at_1(scores: torch.Tensor, answers: Sequence[Sequence[int]]) -> np.ndarray:
    """Per question 1.0 if the top-scored entity is one of its answers (no answers -> 0)."""
    top = scores.argmax(dim=1).tolist()
    return np.array([1.0 if t in set(a) else 0.0 for t, a in zip(top, answers, strict=True)])
