"""MetaQA KGQA (1-hop, 2-hop; full KG and 50% KG): every KG entity is scored as the answer; Hits@1.

Scorer (ours, EmbedKGQA-style plus a learned path ranker), trained on part of dev, frozen encoders:
    s(q, e) = <phi([q; E_topic]), psi(E_e)>                       KG-embedding score, every entity
            + sum over relation paths p (length <= hops) from the topic to e of w_p(q)   reachable entities
q = [mean of Z^LM over the question; mean over the bracketed topic span]; E = the system's entity
embeddings (lm: description embeddings; the others: E^KM over the KG in use, full or 50%). Path types are
directed relations (r and r^-1: 18 for MetaQA) and their pairs;
    w_p(q) = a_p . q + b_p + beta * cos(LM(question), LM(phrase_p))
where phrase_p is a hand-written relation-path phrase (PATH_PHRASES, pairs joined): the training-free path
ranker's prior, which the learned part corrects (2,000 questions are too few to learn 342 path weights from
scratch). With half of the triples gone, answers off every remaining path can only be found by the
embedding score. The topic entity itself is never an answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaket.evaluation.metrics import hits_at_1, mean_ci
from pipelines.progress import progress

TOPIC_RE = re.compile(r"\[([^\]]+)\]")


@dataclass
class Question:
    text: str
    topic: str
    span: tuple[int, int]      # char span of the topic inside the brackets
    answers: list[str]


def parse_line(line: str) -> Question | None:
    """'question with [topic]\\tans1|ans2' -> Question (None for a line without a bracketed topic)."""
    text, _, answers = line.rstrip("\n").partition("\t")
    m = TOPIC_RE.search(text)
    if not m:
        return None
    return Question(text, m.group(1), (m.start(1), m.end(1)), [a for a in answers.split("|") if a])


def load_questions(path: str) -> list[Question]:
    with open(path, encoding="utf-8") as handle:
        return [q for q in map(parse_line, handle) if q is not None]


class PathIndex:
    """Directed adjacency (edge type r for h->t, r + P for t->h) as CSR arrays, for path enumeration."""

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int, max_mid_degree: int = 2000
                 ) -> None:
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        src = np.concatenate([h, t])
        dst = np.concatenate([t, h])
        typ = np.concatenate([r, r + num_relations])
        order = np.argsort(src, kind="stable")
        self.dst, self.typ = dst[order], typ[order]
        self.indptr = np.zeros(num_entities + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=num_entities), out=self.indptr[1:])
        self.num_types = 2 * num_relations
        self.max_mid_degree = max_mid_degree

    def expand(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each position i of `nodes`: all its edges -> (position, neighbour, edge type)."""
        deg = self.indptr[nodes + 1] - self.indptr[nodes]
        pos = np.repeat(np.arange(len(nodes)), deg)
        start = np.repeat(self.indptr[nodes], deg)
        within = np.arange(int(deg.sum())) - np.repeat(np.cumsum(deg) - deg, deg)
        e = start + within
        return pos, self.dst[e], self.typ[e]

    def paths(self, topics: np.ndarray, hops: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unique (question row, candidate entity, path type id) of all paths of length 1..hops from each topic.
        Path type of length 1: r (0..T-1); of length 2: T + r1 * T + r2. Intermediates of degree above
        max_mid_degree are not expanded (hubs such as a language or a year)."""
        b1, e1, r1 = self.expand(topics)
        rows, ents, types = [b1], [e1], [r1]
        if hops >= 2:
            deg = self.indptr[e1 + 1] - self.indptr[e1]
            ok = np.flatnonzero(deg <= self.max_mid_degree)
            p, e2, r2 = self.expand(e1[ok])
            rows.append(b1[ok][p])
            ents.append(e2)
            types.append(self.num_types + r1[ok][p] * self.num_types + r2)
        b, e, t = np.concatenate(rows), np.concatenate(ents), np.concatenate(types)
        key = np.unique((b * (int(e.max(initial=0)) + 1) + e) * self.num_path_types(hops) + t)
        t = key % self.num_path_types(hops)
        be = key // self.num_path_types(hops)
        n_e = int(e.max(initial=0)) + 1
        return be // n_e, be % n_e, t

    def num_path_types(self, hops: int) -> int:
        return self.num_types + (self.num_types ** 2 if hops >= 2 else 0)


# relation -> (phrase for head->tail, phrase for tail->head); MetaQA triples are movie|relation|value
PATH_PHRASES = {
    "directed_by": ("who directed the movie", "which movies did this person direct"),
    "written_by": ("who wrote the movie", "which movies did this person write"),
    "starred_actors": ("which actors starred in the movie", "which movies did this actor star in"),
    "release_year": ("when was the movie released", "which movies were released in this year"),
    "in_language": ("what language is the movie in", "which movies are in this language"),
    "has_tags": ("what is the movie about", "which movies are about this topic"),
    "has_genre": ("what genre is the movie", "which movies are of this genre"),
    "has_imdb_votes": ("how popular is the movie", "which movies are this popular"),
    "has_imdb_rating": ("how is the movie rated", "which movies have this rating"),
}


def path_phrases(relation_names: list[str], hops: int) -> list[str]:
    """Phrase of every path type id of PathIndex.paths: r, r^-1 (+P), then the pairs (T + r1 * T + r2)."""
    single = []
    for inverse in (False, True):
        for name in relation_names:
            fwd, inv = PATH_PHRASES.get(name, (name.replace("_", " "), f"{name.replace('_', ' ')} of"))
            single.append(inv if inverse else fwd)
    if hops < 2:
        return single
    return single + [f"{a}; {b}" for a in single for b in single]


def phrase_prior(questions: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
    """[Q, P] cosine between question and path-phrase embeddings (the training-free ranker's score)."""
    return F.normalize(questions.float(), dim=-1) @ F.normalize(phrases.float(), dim=-1).T


class QAScorer(nn.Module):
    def __init__(self, q_dim: int, e_dim: int, num_path_types: int, hidden: int = 64) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(q_dim + e_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.psi = nn.Linear(e_dim, hidden)
        self.path = nn.Linear(q_dim, num_path_types)
        nn.init.zeros_(self.path.weight)
        nn.init.constant_(self.path.bias, 1.0)
        nn.init.zeros_(self.phi[-1].weight)                     # epoch 0 = the path ranker: the embedding
        nn.init.zeros_(self.phi[-1].bias)                       # score starts at 0 and is learned from there
        self.prior_scale = nn.Parameter(torch.tensor(20.0))     # beta
        self.hidden = hidden

    def forward(self, q: torch.Tensor, topic: torch.Tensor, ent_proj: torch.Tensor,
                path_rows: torch.Tensor, path_ents: torch.Tensor, path_types: torch.Tensor,
                topic_ids: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.phi(torch.cat([q, topic], -1)) @ ent_proj.T / self.hidden ** 0.5
        w = self.path(q)[path_rows, path_types]                          # a_p . q + b_p
        if prior is not None:
            w = w + self.prior_scale * prior[path_rows, path_types]      # + beta * cos(question, phrase_p)
        scores = scores.index_put((path_rows, path_ents), w, accumulate=True)
        return scores.index_put((torch.arange(len(q)), topic_ids), torch.tensor(-1e4))


def answer_ids(questions: list[Question], name_to_id: dict[str, int]) -> list[list[int]]:
    return [[name_to_id[a] for a in q.answers if a in name_to_id] for q in questions]


def reduce_entities(ents: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """L2-normalise, project on the top `dim` principal components, scale to unit variance per component."""
    x = F.normalize(ents.float(), dim=-1)
    x = x - x.mean(0)
    if dim and x.size(1) > dim:
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=dim, center=False)
        x = x @ v
    return x / x.std(0).clamp(min=1e-6)


def _batch_scores(model: QAScorer, q: torch.Tensor, topics: np.ndarray, ents: torch.Tensor, ent_proj: torch.Tensor,
                  index: PathIndex, hops: int, prior: torch.Tensor | None = None) -> torch.Tensor:
    rows, cand, types = (torch.from_numpy(x) for x in index.paths(topics, hops))
    t = torch.from_numpy(topics)
    return model(q, ents[t], ent_proj, rows, cand, types, t, prior)


def train_and_test(q_train: torch.Tensor, t_train: np.ndarray, a_train: list[list[int]], q_val: torch.Tensor,
                   t_val: np.ndarray, a_val: list[list[int]], q_test: torch.Tensor, t_test: np.ndarray,
                   a_test: list[list[int]], ents: torch.Tensor, index: PathIndex, hops: int, seed: int = 0,
                   epochs: int = 10, batch_size: int = 128, lr: float = 2e-3, entity_dim: int = 128,
                   priors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Train the scorer on (q_train, topic ids, answer ids); keep the epoch best on val; Hits@1 on test.
    Entity features are reduced to `entity_dim` principal components first (CPU cost of scoring all N).
    `priors` = the phrase_prior matrices of train, val and test (None: no path-phrase prior)."""
    p_train, p_val, p_test = priors if priors is not None else (None, None, None)
    torch.manual_seed(seed)
    ents = reduce_entities(ents, entity_dim, seed)
    model = QAScorer(q_train.size(1), ents.size(1), index.num_path_types(hops))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    keep = [i for i, a in enumerate(a_train) if a]
    rng = np.random.default_rng(seed)
    best, best_state, history = -1.0, None, []

    def evaluate(qs: torch.Tensor, ts: np.ndarray, ans: list[list[int]], prior: torch.Tensor | None
                 ) -> np.ndarray:
        model.eval()
        hits = []
        with torch.no_grad():
            proj = model.psi(ents)
            for lo in range(0, len(qs), 256):
                s = _batch_scores(model, qs[lo:lo + 256], ts[lo:lo + 256], ents, proj, index, hops,
                                  None if prior is None else prior[lo:lo + 256])
                hits.append(hits_at_1(s, ans[lo:lo + 256]))
        model.train()
        return np.concatenate(hits) if hits else np.zeros(0)

    for epoch in progress(range(epochs), desc=f"MetaQA {hops}-hop scorer", unit="epoch"):
        order = rng.permutation(keep)
        losses = []
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            s = _batch_scores(model, q_train[idx], t_train[idx], ents, model.psi(ents), index, hops,
                              None if p_train is None else p_train[idx])
            logp = F.log_softmax(s, dim=1)
            rows = torch.repeat_interleave(torch.arange(len(idx)), torch.tensor([len(a_train[i]) for i in idx]))
            cols = torch.tensor([e for i in idx for e in a_train[i]])
            weight = 1.0 / torch.tensor([len(a_train[i]) for i in idx], dtype=torch.float)[rows]
            loss = -(logp[rows, cols] * weight).sum() / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        val = float(evaluate(q_val, t_val, a_val, p_val).mean())
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_hits1": val})
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    test = evaluate(q_test, t_test, a_test, p_test)
    return {"hits1": mean_ci(test), "val_hits1": best, "history": history,
            "path_prior_scale": float(model.prior_scale.detach())}


def reachable(index: PathIndex, topics: np.ndarray, answers: list[list[int]], hops: int,
              batch: int = 32) -> float:
    """Share of questions with at least one answer on a path of length <= hops (no hub cut-off here)."""
    saved, index.max_mid_degree = index.max_mid_degree, 10 ** 12
    big = np.int64(1 << 32)
    try:
        hit = np.zeros(len(topics), dtype=bool)
        for lo in range(0, len(topics), batch):
            rows, ents, _ = index.paths(topics[lo:lo + batch], hops)
            gold = np.array([b * big + e for b, a in enumerate(answers[lo:lo + batch]) for e in a], dtype=np.int64)
            found = np.isin(rows * big + ents, gold)
            hit[lo + np.unique(rows[found])] = True
        return float(hit.mean())
    finally:
        index.max_mid_degree = saved
