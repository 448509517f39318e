"""One function per task: eval KG store(s) -> system features -> task head -> a results dict.

Every result has `headline`: {column name: {"mean", "ci95", "n"}} (fractions), the numbers `report` tabulates.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from jaket.evaluation import entity_cls, fewrel, metaqa
from jaket.evaluation.systems import EvalSystem
from kg_store.store import KGStore
from pipelines.eval_kgs import build_eval_kg, coverage

FEWREL_SETTINGS = ((5, 1), (5, 5), (10, 1), (10, 5))


def _norm(name: str) -> str:
    return " ".join(name.split())


def run_fewrel(system: EvalSystem, data: Path, work: Path, episodes: int = 1000, seed: int = 0,
               settings: tuple[tuple[int, int], ...] = FEWREL_SETTINGS, adapt_steps: int = 300) -> dict:
    d = fewrel.load_fewrel(data / "eval" / "fewrel" / "val_wiki.json")
    out: dict = {"instances": len(d.texts), "relations": d.relations}
    ids, e_km, key = None, None, "fewrel-text"
    if system.uses_graph:
        store_path = build_eval_kg("fewrel", data, work)
        with KGStore(store_path) as kg:
            _, e_km = system.entity_features(kg)
            q2i = kg.qid_to_id()
            key = f"fewrel-text-{system.store_key(kg)}" if system.early_fusion else key
        ids = [[q2i.get(h, -1), q2i.get(t, -1)] for h, t in d.qids]
        out["kg"] = {"store": str(store_path), "all": coverage(store_path),
                     "fewrel_entities": coverage(store_path, {q for pair in d.qids for q in pair})}
    t0 = time.perf_counter()
    pooled, _ = system.cached(key, lambda: system.encode_spans(d.texts, d.spans, ids, e_km), plain=True)
    out["encode_seconds"] = round(time.perf_counter() - t0, 1)
    late = e_km[torch.tensor(ids)] if system.name == "lm+gnn" else None
    x = fewrel.instance_features(pooled, late)
    res = fewrel.evaluate(x, d.labels, list(settings), episodes, q=5, seed=seed, adapt_steps=adapt_steps)
    out.update(res)
    headline = {}
    for n, k in settings:
        r = res[f"{n}-way {k}-shot"]
        if "test_groups" in r:
            headline[f"FewRel {n}-{k}"] = r["test_groups"]
            if "test_groups_adapted" in r:
                headline[f"FewRel {n}-{k} adapted"] = r["test_groups_adapted"]
        else:
            headline[f"FewRel {n}-{k} (all16)"] = r["all16"]
    out["headline"] = headline
    return out


def _questions(path: Path, q2i: dict[str, int]) -> tuple[list[metaqa.Question], np.ndarray, list[list[int]]]:
    qs = metaqa.load_questions(str(path))
    topics = np.array([q2i.get(_norm(q.topic), -1) for q in qs], dtype=np.int64)
    answers = [[q2i[_norm(a)] for a in q.answers if _norm(a) in q2i] for q in qs]
    return qs, topics, answers


def _encode_questions(system: EvalSystem, qs: list[metaqa.Question], sel: np.ndarray, topics: np.ndarray,
                      e_km: torch.Tensor | None, key: str) -> torch.Tensor:
    """[mean of Z^LM over the question; mean over the topic span] of questions `sel` (cached)."""
    texts = [qs[i].text for i in sel]
    spans = [[qs[i].span] for i in sel]
    ents = [[int(topics[i])] for i in sel]
    pooled, whole = system.cached(key, lambda: system.encode_spans(texts, spans, ents, e_km), plain=True)
    return torch.cat([whole, pooled[:, 0]], dim=1)


def run_metaqa(system: EvalSystem, data: Path, work: Path, hops: tuple[int, ...] = (1, 2),
               train_questions: int = 2000, val_questions: int = 500, test_questions: int = 1000,
               seed: int = 0, epochs: int = 10) -> dict:
    root = data / "eval" / "metaqa"
    out: dict = {"train_questions": train_questions, "val_questions": val_questions,
                 "test_questions": test_questions, "settings": {}}
    headline = {}
    for kg_name, label in (("metaqa", "full"), ("metaqa-half", "50%")):
        store_path = build_eval_kg(kg_name, data, work, seed=seed)
        with KGStore(store_path) as kg:
            e_text, e_km = system.entity_features(kg)
            q2i = kg.qid_to_id()
            index = metaqa.PathIndex(kg.triples(), kg.num_entities, kg.num_relations)
            skey = system.store_key(kg)
            relation_names = [pid for _, pid in sorted(kg.query("SELECT relation_id, pid FROM relations"))]
        ents = e_km if e_km is not None else e_text
        for h in hops:
            t0 = time.perf_counter()
            dev, t_dev, a_dev = _questions(root / f"{h}-hop" / "dev.txt", q2i)
            test, t_test, a_test = _questions(root / f"{h}-hop" / "test.txt", q2i)
            rng = np.random.default_rng(seed)
            perm = rng.permutation(np.flatnonzero(t_dev >= 0))
            tr, va = np.sort(perm[:train_questions]), np.sort(perm[train_questions:train_questions + val_questions])
            te = np.sort(rng.permutation(np.flatnonzero(t_test >= 0))[:test_questions])

            prefix = f"metaqa-{h}-{seed}" + (f"-{skey}" if system.early_fusion else "")
            q_tr = _encode_questions(system, dev, tr, t_dev, e_km, f"{prefix}-train{len(tr)}")
            q_va = _encode_questions(system, dev, va, t_dev, e_km, f"{prefix}-val{len(va)}")
            q_te = _encode_questions(system, test, te, t_test, e_km, f"{prefix}-test{len(te)}")
            phrases = metaqa.path_phrases(relation_names, h)
            phrase_key = hashlib.sha1("\n".join(phrases).encode()).hexdigest()[:12]   # edited phrases: new cache
            ph = system.cached(f"metaqa-phrases-{h}-{phrase_key}", lambda p=phrases: system.embed_texts(p),
                               plain=True)
            priors = tuple(metaqa.phrase_prior(system.cached(
                f"metaqa-{h}-{seed}-{part}{len(sel)}-plain", lambda qs=qs, sel=sel: system.embed_texts(
                    [qs[i].text.replace("[", "").replace("]", "") for i in sel], max_len=64), plain=True), ph)
                for part, qs, sel in (("train", dev, tr), ("val", dev, va), ("test", test, te)))
            res = metaqa.train_and_test(q_tr, t_dev[tr], [a_dev[i] for i in tr], q_va, t_dev[va],
                                        [a_dev[i] for i in va], q_te, t_test[te], [a_test[i] for i in te],
                                        ents, index, h, seed=seed, epochs=epochs, priors=priors)
            res["answer_reachable"] = metaqa.reachable(index, t_test[te], [a_test[i] for i in te], h)
            res["test_without_topic_in_kg"] = int((t_test < 0).sum())
            res["seconds"] = round(time.perf_counter() - t0, 1)
            out["settings"][f"{h}-hop {label}"] = res
            headline[f"MetaQA {h}-hop {label}"] = res["hits1"]
    out["headline"] = headline
    return out


def run_entity_cls(system: EvalSystem, data: Path, work: Path, seed: int = 0, top: int = 50) -> dict:
    store_path = build_eval_kg("codex-m", data, work)
    with KGStore(store_path) as kg:
        e_text, e_km = system.entity_features(kg)
        qids = kg.entity_qids()
        no_text = np.array([lab is None for (lab,) in kg.query("SELECT label FROM entities ORDER BY entity_id")])
    types = json.loads((data / "eval" / "codex" / "types" / "entity2types.json").read_text())
    classes, labels = entity_cls.fine_grained_labels(types, qids, top)
    feats = e_km if e_km is not None else e_text
    keep = np.flatnonzero(labels >= 0)
    splits = entity_cls.stratified_split(labels[keep], seed=seed)
    res = entity_cls.classify(feats[torch.from_numpy(keep)], labels[keep], splits, no_text[keep], seed=seed)
    res.update({"classes": classes, "labelled_entities": int(len(keep)), "kg": coverage(store_path),
                "split_sizes": [int(len(s)) for s in splits]})
    n = res["test"]
    res["headline"] = {"CoDEx-M acc": {"mean": res["accuracy"], "ci95": _binom_ci(res["accuracy"], n), "n": n},
                       "CoDEx-M macro-F1": {"mean": res["macro_f1"], "ci95": None, "n": n}}
    if res["no_text_accuracy"] is not None:
        m = res["test_no_text"]
        res["headline"]["CoDEx-M no-text acc"] = {"mean": res["no_text_accuracy"],
                                                  "ci95": _binom_ci(res["no_text_accuracy"], m), "n": m}
    return res


def _binom_ci(p: float, n: int) -> float:
    return float(1.96 * np.sqrt(max(p * (1 - p), 0.0) / max(n, 1)))
