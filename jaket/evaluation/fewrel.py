"""FewRel N-way K-shot relation classification with prototypical networks.

Representation of an instance: [head; tail], each the MEAN of Z^LM over the mention's tokens (span pooling,
no entity markers: the frozen encoder has never seen marker tokens). lm+gnn appends the KM embeddings of
the head and tail entities (late fusion); lm+gnn+m and jaket have them merged into Z^LM (early fusion).
Prototype = mean of the K support vectors; a query goes to the prototype of highest cosine.

Relations are split into two disjoint groups of 8 (fixed seed). Fold f tests on group f with episodes drawn
from that group only; the optional few-shot training (a residual linear adapter with a prototypical loss)
uses episodes of the OTHER group only. 'all16' is the training-free reference over all 16 relations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jaket.evaluation.metrics import mean_ci


@dataclass
class FewRelData:
    texts: list[str]
    spans: list[list[tuple[int, int]]]   # [(head char span), (tail char span)]
    qids: list[list[str]]               # [head qid, tail qid]
    labels: np.ndarray                  # relation index per instance
    relations: list[str]                # pids


def tokens_to_text(tokens: list[str], spans: list[list[int]]) -> tuple[str, list[tuple[int, int]]]:
    """Join tokens with spaces; each token-position list -> (char_start, char_end) of its first..last token."""
    starts, pos = [], 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1
    out = []
    for positions in spans:
        lo, hi = min(positions), max(positions)
        out.append((starts[lo], starts[hi] + len(tokens[hi])))
    return " ".join(tokens), out


def load_fewrel(path: str | Path) -> FewRelData:
    import json

    raw = json.loads(Path(path).read_text())
    data = FewRelData([], [], [], np.zeros(0, dtype=np.int64), sorted(raw))
    labels = []
    for r, rel in enumerate(data.relations):
        for inst in raw[rel]:
            text, spans = tokens_to_text(inst["tokens"], [inst["h"][2][0], inst["t"][2][0]])
            data.texts.append(text)
            data.spans.append(spans)
            data.qids.append([inst["h"][1], inst["t"][1]])
            labels.append(r)
    data.labels = np.array(labels, dtype=np.int64)
    return data


def split_relations(num_relations: int, groups: int = 2, seed: int = 0) -> list[list[int]]:
    """Disjoint groups of relation indices covering all relations (sizes differ by at most one)."""
    order = list(range(num_relations))
    random.Random(seed).shuffle(order)
    return [sorted(order[g::groups]) for g in range(groups)]


def sample_episode(rng: np.random.Generator, by_relation: dict[int, np.ndarray], relations: list[int], n: int,
                   k: int, q: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """N distinct relations from `relations`; K support and Q query instances each, disjoint.
    Returns (relations, support [N, K], query [N, Q]) of instance indices."""
    if n > len(relations):
        raise ValueError(f"{n}-way needs {n} relations, the group has {len(relations)}")
    chosen = [int(x) for x in rng.choice(relations, size=n, replace=False)]
    support, query = [], []
    for r in chosen:
        pick = rng.choice(by_relation[r], size=k + q, replace=False)
        support.append(pick[:k])
        query.append(pick[k:])
    return chosen, np.stack(support), np.stack(query)


def prototype_predict(support: torch.Tensor, query: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """support [N, K, D], query [M, D] -> predicted class index in 0..N-1 for each query."""
    protos = support.mean(1)
    if metric == "cosine":
        scores = F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T
    else:
        scores = -torch.cdist(query, protos)
    return scores.argmax(1)


def run_episodes(features: torch.Tensor, labels: np.ndarray, relations: list[int], n: int, k: int, q: int,
                 episodes: int, seed: int, metric: str = "cosine", chunk: int = 250) -> np.ndarray:
    """Per-episode accuracy of prototypical classification over `episodes` episodes (computed in chunks)."""
    rng = np.random.default_rng(seed)
    by_relation = {r: np.flatnonzero(labels == r) for r in relations}
    drawn = [sample_episode(rng, by_relation, relations, n, k, q) for _ in range(episodes)]
    gold = torch.arange(n).repeat_interleave(q)
    acc = np.zeros(episodes)
    for lo in range(0, episodes, chunk):
        part = drawn[lo:lo + chunk]
        sup = features[torch.from_numpy(np.stack([d[1] for d in part]))]                 # [E, N, K, D]
        qry = features[torch.from_numpy(np.stack([d[2].reshape(-1) for d in part]))]     # [E, N*Q, D]
        protos = sup.mean(2)
        if metric == "cosine":
            scores = F.normalize(qry, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
        else:
            scores = -torch.cdist(qry, protos)
        acc[lo:lo + len(part)] = (scores.argmax(-1) == gold).float().mean(1).numpy()
    return acc


def train_adapter(features: torch.Tensor, labels: np.ndarray, relations: list[int], n: int = 5, k: int = 5,
                  q: int = 5, steps: int = 300, lr: float = 1e-3, seed: int = 0) -> torch.nn.Module:
    """A residual linear adapter x + xW (W = 0 at start) trained with the prototypical loss (scaled cosine)
    on episodes of `relations` only."""
    torch.manual_seed(seed)
    dim = features.size(1)
    adapter = torch.nn.Linear(dim, dim, bias=False)
    torch.nn.init.zeros_(adapter.weight)
    scale = torch.nn.Parameter(torch.tensor(10.0))
    opt = torch.optim.Adam([*adapter.parameters(), scale], lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed + 1)
    by_relation = {r: np.flatnonzero(labels == r) for r in relations}
    n = min(n, len(relations))
    for _ in range(steps):
        _, sup, qry = sample_episode(rng, by_relation, relations, n, k, q)
        x = features[torch.from_numpy(np.concatenate([sup.reshape(-1), qry.reshape(-1)]))]
        x = F.normalize(x + adapter(x), dim=-1)
        s, qx = x[:n * k].view(n, k, -1), x[n * k:]
        logits = scale * qx @ F.normalize(s.mean(1), dim=-1).T
        loss = F.cross_entropy(logits, torch.arange(n).repeat_interleave(q))
        opt.zero_grad()
        loss.backward()
        opt.step()
    adapter.eval()
    return adapter


def evaluate(features: torch.Tensor, labels: np.ndarray, settings: list[tuple[int, int]], episodes: int,
             q: int = 5, seed: int = 0, adapt_steps: int = 300) -> dict:
    """All settings: training-free over the two test groups (folds), adapted (trained on the other group),
    and the training-free all-16 reference. Episode counts are per fold."""
    num_rel = int(labels.max()) + 1
    groups = split_relations(num_rel, 2, seed)
    out: dict = {"relation_groups": groups, "episodes_per_fold": episodes, "queries_per_relation": q}
    adapters = {}
    if adapt_steps > 0:
        for f in range(len(groups)):
            with torch.enable_grad():
                adapters[f] = train_adapter(features, labels, groups[1 - f], steps=adapt_steps, seed=seed + f)
    for n, k in settings:
        name = f"{n}-way {k}-shot"
        res: dict = {}
        if n <= min(len(g) for g in groups):
            free, adapted = [], []
            for f, group in enumerate(groups):
                free.append(run_episodes(features, labels, group, n, k, q, episodes, seed + 100 * f))
                if f in adapters:
                    with torch.no_grad():
                        x = features + adapters[f](features)
                    adapted.append(run_episodes(x, labels, group, n, k, q, episodes, seed + 100 * f))
            res["test_groups"] = mean_ci(np.concatenate(free))
            if adapted:
                res["test_groups_adapted"] = mean_ci(np.concatenate(adapted))
        res["all16"] = mean_ci(run_episodes(features, labels, list(range(num_rel)), n, k, q, episodes, seed + 7))
        out[name] = res
    return out


def instance_features(pooled: torch.Tensor, entity_km: torch.Tensor | None = None) -> torch.Tensor:
    """[head; tail] from span-pooled states [B, 2, F]; with late fusion, + [E^KM_head; E^KM_tail] [B, 2, F]
    (each part L2-normalised so that neither dominates the cosine)."""
    text = pooled.reshape(pooled.size(0), -1)
    if entity_km is None:
        return text
    parts = [F.normalize(pooled[:, 0], dim=-1), F.normalize(pooled[:, 1], dim=-1),
             F.normalize(entity_km[:, 0], dim=-1), F.normalize(entity_km[:, 1], dim=-1)]
    return torch.cat(parts, dim=-1)
