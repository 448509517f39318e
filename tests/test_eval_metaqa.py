"""MetaQA parsing, path enumeration, the scorer on a toy KG, Hits@1 (jaket.evaluation.metaqa)."""

from __future__ import annotations

import numpy as np
import torch

from jaket.evaluation.metaqa import PathIndex, load_questions, parse_line, reachable, train_and_test
from jaket.evaluation.metrics import hits_at_1


def test_parse_topic_span_and_answers(tmp_path):
    q = parse_line("what films did [Michelle Trachtenberg] star in\tInspector Gadget|Black Christmas|Ice Princess\n")
    assert q.topic == "Michelle Trachtenberg"
    assert q.text[q.span[0]:q.span[1]] == "Michelle Trachtenberg" and q.text[q.span[0] - 1] == "["
    assert q.answers == ["Inspector Gadget", "Black Christmas", "Ice Princess"]
    assert parse_line("no topic here\tx") is None
    q = parse_line("[1984] was directed by who\tMichael Radford")
    assert q.topic == "1984" and q.span == (1, 5) and q.answers == ["Michael Radford"]
    (tmp_path / "dev.txt").write_text("who wrote [A]\tB\nbroken line\nwhen was [C] released\t1999|2000\n")
    qs = load_questions(str(tmp_path / "dev.txt"))
    assert [q.topic for q in qs] == ["A", "C"] and qs[1].answers == ["1999", "2000"]


def _toy_kg():
    """movies 0..3, directors 4..5, years 6..7; relation 0 = directed_by, 1 = release_year."""
    triples = np.array([[0, 0, 4], [1, 0, 4], [2, 0, 5], [3, 0, 5], [0, 1, 6], [1, 1, 7], [2, 1, 6], [3, 1, 7]])
    return triples, PathIndex(triples, 8, 2)


def test_paths_one_and_two_hops():
    _, index = _toy_kg()
    rows, ents, types = index.paths(np.array([0, 4]), 1)
    got = set(zip(rows.tolist(), ents.tolist(), types.tolist(), strict=True))
    assert got == {(0, 4, 0), (0, 6, 1), (1, 0, 2), (1, 1, 2)}       # inverse directed_by = type 0 + P = 2
    rows, ents, types = index.paths(np.array([4]), 2)
    two = {(e, t) for e, t in zip(ents.tolist(), types.tolist(), strict=True) if t >= index.num_types}
    # director 4 -> movies 0, 1 (type 2) -> years 6, 7 (type 1): path id T + 2 * T + 1
    assert {(6, 4 + 2 * 4 + 1), (7, 4 + 2 * 4 + 1)} <= two
    assert index.num_path_types(2) == 4 + 16 and index.num_path_types(1) == 4
    assert reachable(index, np.array([4, 4]), [[6], [5]], 2) == 0.5


def test_hits_at_1():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.0, 0.0, 1.0]])
    assert hits_at_1(scores, [[1], [1, 2], []]).tolist() == [1.0, 0.0, 0.0]


def test_scorer_learns_the_relation_from_the_question():
    """Questions 'who directed [m]' (answer = director) and 'when was [m] released' (answer = year): the
    question vector says which; the learned path weights must pick the right neighbour of the topic."""
    triples, index = _toy_kg()
    gen = torch.Generator().manual_seed(0)
    ents = torch.randn(8, 16, generator=gen)
    director_of = {h: t for h, r, t in triples.tolist() if r == 0}
    year_of = {h: t for h, r, t in triples.tolist() if r == 1}
    kinds = torch.randn(2, 8, generator=gen)

    def make(n, seed):
        rng = np.random.default_rng(seed)
        topics = rng.integers(0, 4, n)
        kind = rng.integers(0, 2, n)
        q = kinds[torch.from_numpy(kind)] + 0.05 * torch.randn(n, 8, generator=gen)
        answers = [[director_of[t]] if k == 0 else [year_of[t]] for t, k in zip(topics, kind, strict=True)]
        return q, topics.astype(np.int64), answers

    tr, va, te = make(200, 0), make(50, 1), make(100, 2)
    res = train_and_test(*tr, *va, *te, ents, index, hops=1, epochs=8, batch_size=32, lr=1e-2)
    assert res["hits1"]["mean"] > 0.95 and res["hits1"]["n"] == 100
    assert res["history"][-1]["loss"] < res["history"][0]["loss"]


def test_path_phrases_follow_path_type_ids_and_the_prior_alone_answers():
    """Phrase of type r = forward relation, r + P = inverse, pairs in PathIndex's order; with question vectors
    close to the right phrase and NO training signal in q (a constant q), the prior picks the answer."""
    from jaket.evaluation.metaqa import PATH_PHRASES, path_phrases, phrase_prior

    triples, index = _toy_kg()
    names = ["directed_by", "release_year"]
    phrases = path_phrases(names, 2)
    assert len(phrases) == index.num_path_types(2)
    assert phrases[0] == PATH_PHRASES["directed_by"][0] and phrases[2] == PATH_PHRASES["directed_by"][1]
    assert phrases[4 + 2 * 4 + 1] == f"{PATH_PHRASES['directed_by'][1]}; {PATH_PHRASES['release_year'][0]}"
    gen = torch.Generator().manual_seed(0)
    phrase_vecs = torch.randn(len(phrases), 32, generator=gen)
    ents = torch.randn(8, 16, generator=gen)
    director_of = {h: t for h, r, t in triples.tolist() if r == 0}
    year_of = {h: t for h, r, t in triples.tolist() if r == 1}

    def make(n, seed):
        rng = np.random.default_rng(seed)
        topics, kind = rng.integers(0, 4, n), rng.integers(0, 2, n)
        text_vecs = phrase_vecs[torch.from_numpy(kind)] + 0.3 * torch.randn(n, 32, generator=gen)  # type 0 / 1
        answers = [[director_of[t]] if k == 0 else [year_of[t]] for t, k in zip(topics, kind, strict=True)]
        return torch.ones(n, 8), topics.astype(np.int64), answers, phrase_prior(text_vecs, phrase_vecs)

    (q1, t1, a1, p1), (q2, t2, a2, p2), (q3, t3, a3, p3) = make(40, 0), make(20, 1), make(100, 2)
    res = train_and_test(q1, t1, a1, q2, t2, a2, q3, t3, a3, ents, index, hops=1, epochs=1, batch_size=40,
                         lr=1e-9, priors=(p1, p2, p3))
    assert res["hits1"]["mean"] > 0.95
    no_prior = train_and_test(q1, t1, a1, q2, t2, a2, q3, t3, a3, ents, index, hops=1, epochs=1, batch_size=40,
                              lr=1e-9)
    assert no_prior["hits1"]["mean"] < 0.75          # a constant q cannot tell the two questions apart
