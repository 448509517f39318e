"""Tiny stores and tiny random encoders for the jaket tests.

The store is a small coherent world (50 entities in 5 categories, 10 relations, typed triples, template
passages with character-exact mention spans), so every pretraining loss has something learnable.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

COUNTRIES = [("France", "Europe"), ("Germany", "Europe"), ("Italy", "Europe"), ("Spain", "Europe"),
             ("Norway", "Europe"), ("Japan", "Asia")]
CITIES = ["Paris", "Lyon", "Berlin", "Munich", "Rome", "Milan", "Madrid", "Seville", "Oslo", "Bergen", "Tokyo",
          "Osaka"]
COMPANIES = ["Acme Corporation", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark Industries",
             "Wayne Enterprises"]
RIVERS = ["Seine", "Rhine", "Tiber", "Ebro"]
PERSONS = ["Alice Moreau", "Bruno Keller", "Carla Rossi", "Diego Garcia", "Erik Hansen", "Yuki Tanaka",
           "Marie Dubois", "Hans Weber", "Giulia Bianchi", "Pablo Ruiz", "Ingrid Olsen", "Kenji Sato",
           "Louis Martin", "Anna Fischer", "Marco Conti", "Lucia Torres", "Nils Berg", "Aiko Suzuki",
           "Claire Petit", "Felix Wagner"]
OCCUPATIONS = ["painter", "engineer", "writer", "physician", "composer"]
CATEGORIES = ["person", "city", "country", "company", "river"]
RELATIONS = [("P19", "place of birth", "the city where the person was born"),
             ("P27", "country of citizenship", "the country the person is a citizen of"),
             ("P108", "employer", "the organisation the person works for"),
             ("P17", "country", "the country the item is located in"),
             ("P1376", "capital of", "the country whose capital the city is"),
             ("P159", "headquarters location", "the city where the company is based"),
             ("P112", "founded by", "the person who founded the company"),
             ("P2789", "flows through", "a city the river flows through"),
             ("P26", "spouse", "the person the person is married to"),
             ("P205", "basin country", "the country the river flows in")]


def _entities() -> list[dict]:
    rows: list[dict] = []

    def add(label: str, category: int, desc: str | None, mention: bool = True) -> int:
        eid = len(rows)
        start = desc.find(label) if (desc and mention) else -1
        rows.append({"entity_id": eid, "qid": f"Q{1000 + eid}", "label": label, "description": desc,
                     "desc_source": "custom", "category_id": category,
                     "desc_mention_start": start if start >= 0 else None,
                     "desc_mention_end": start + len(label) if start >= 0 else None})
        return eid

    for name, continent in COUNTRIES:
        add(name, 2, f"{name} is a country in {continent}.")
    for i, name in enumerate(CITIES):
        country = COUNTRIES[i // 2][0]
        add(name, 1, f"{name} is a city in {country}." if i % 5 else f"a large city in {country}", mention=i % 5 != 0)
    for i, name in enumerate(COMPANIES):
        add(name, 3, f"{name} is a company based in {CITIES[(3 * i) % len(CITIES)]}.")
    for i, name in enumerate(RIVERS):
        add(name, 4, f"The {name} is a river that flows through {CITIES[2 * i]}.")
    for i, name in enumerate(PERSONS):
        occ = OCCUPATIONS[i % len(OCCUPATIONS)]
        add(name, 0, f"{name} is a {occ} born in {CITIES[i % len(CITIES)]}." if i % 7 else None)
    return rows


def tiny_store_tables(seed: int = 0) -> dict[str, pl.DataFrame]:
    rng = random.Random(seed)
    ents = _entities()
    ids = {e["label"]: e["entity_id"] for e in ents}
    triples: set[tuple[int, int, int]] = set()
    for i, (name, _) in enumerate(COUNTRIES):
        for j in (2 * i, 2 * i + 1):
            triples.add((ids[CITIES[j]], 3, ids[name]))
        triples.add((ids[CITIES[2 * i]], 4, ids[name]))
    for i, name in enumerate(COMPANIES):
        triples.add((ids[name], 5, ids[CITIES[(3 * i) % len(CITIES)]]))
        triples.add((ids[name], 6, ids[PERSONS[(2 * i + 1) % len(PERSONS)]]))
    for i, name in enumerate(RIVERS):
        triples.add((ids[name], 7, ids[CITIES[2 * i]]))
        triples.add((ids[name], 9, ids[COUNTRIES[i][0]]))
    for i, name in enumerate(PERSONS):
        city = CITIES[i % len(CITIES)]
        triples.add((ids[name], 0, ids[city]))
        triples.add((ids[name], 1, ids[COUNTRIES[(i % len(CITIES)) // 2][0]]))
        triples.add((ids[name], 2, ids[COMPANIES[rng.randrange(len(COMPANIES))]]))
        if i % 2 == 0:
            triples.add((ids[name], 8, ids[PERSONS[i + 1]]))
    triples_list = sorted(triples)
    passages, mentions = [], []

    def passage(parts: list[tuple[str, int | None]]) -> None:
        pid, text = len(passages), ""
        for chunk, ent in parts:
            if ent is not None:
                mentions.append({"passage_id": pid, "entity_id": ent, "char_start": len(text),
                                 "char_end": len(text) + len(chunk), "source": "anchor"})
            text += chunk
        passages.append({"passage_id": pid, "doc_id": pid, "idx": 0, "text": text})

    for h, r, t in triples_list:
        head, tail = ents[h]["label"], ents[t]["label"]
        verb = RELATIONS[r][1]
        passage([(head, h), (f" has {verb} ", None), (tail, t), (".", None)])
    for i, name in enumerate(PERSONS):
        city = CITIES[i % len(CITIES)]
        passage([(name, ids[name]), (" was born in ", None), (city, ids[city]), (" and lives in ", None),
                 (COUNTRIES[(i % len(CITIES)) // 2][0], ids[COUNTRIES[(i % len(CITIES)) // 2][0]]), (".", None)])
    return {
        "entities": pl.DataFrame(ents),
        "relations": pl.DataFrame([{"relation_id": i, "pid": p, "label": lab, "description": d}
                                   for i, (p, lab, d) in enumerate(RELATIONS)]),
        "categories": pl.DataFrame([{"category_id": i, "qid": f"Q{i + 1}", "label": c}
                                    for i, c in enumerate(CATEGORIES)]),
        "triples": pl.DataFrame([{"head_id": h, "relation_id": r, "tail_id": t} for h, r, t in triples_list]),
        "documents": pl.DataFrame([{"doc_id": p["doc_id"], "title": f"doc {p['doc_id']}", "entity_id": None}
                                   for p in passages], schema={"doc_id": pl.Int64, "title": pl.Utf8,
                                                               "entity_id": pl.Int64}),
        "passages": pl.DataFrame(passages),
        "mentions": pl.DataFrame(mentions),
    }


def make_tiny_store(path: Path, seed: int = 0) -> Path:
    from kg_store.store import create, write_tables

    con = create(path)
    write_tables(con, tiny_store_tables(seed))
    con.close()
    return path


def make_tiny_lm(path: Path, family: str = "bert", hidden: int = 32, layers: int = 4, heads: int = 2,
                 max_positions: int = 130) -> Path:
    """A tiny random encoder saved with the packaged (uncased BERT) tokenizer; vocab sizes match."""
    import torch
    from transformers import AutoModelForMaskedLM, BertConfig, RobertaConfig

    from jaket.lm import load_tokenizer, quiet_transformers

    tok = load_tokenizer(None)
    kwargs = dict(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=2 * hidden, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                  pad_token_id=tok.pad_token_id)
    if family == "bert":
        config = BertConfig(max_position_embeddings=max_positions, **kwargs)
    else:
        config = RobertaConfig(max_position_embeddings=max_positions + 2, type_vocab_size=1, **kwargs)
    torch.manual_seed(0)
    with quiet_transformers():
        model = AutoModelForMaskedLM.from_config(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


_CACHE: dict[str, Path] = {}


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread. On a shared 2-core box, torch's second thread spin-waits against the
    other jobs and makes tiny-model steps ~5x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cached(key: str, factory: pytest.TempPathFactory, make: object) -> Path:
    """Build each artefact once per session, whichever test module asks first."""
    if key not in _CACHE or not _CACHE[key].exists():
        _CACHE[key] = make(factory.mktemp(key))
    return _CACHE[key]


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cached("store", tmp_path_factory, lambda d: make_tiny_store(d / "tiny.duckdb"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cached("bert", tmp_path_factory, lambda d: make_tiny_lm(d / "tiny-bert", "bert"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cached("roberta", tmp_path_factory, lambda d: make_tiny_lm(d / "tiny-roberta", "roberta"))
