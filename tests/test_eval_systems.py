"""The four systems on a tiny random BERT and tiny stores; `jaket-eval` end to end on synthetic data."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch
from click.testing import CliRunner

from jaket.evaluation.cli import main
from jaket.evaluation.systems import EvalSystem, span_mean
from kg_store.store import KGStore

pytest_plugins = ["tests.jaket_fixtures"]


def test_span_mean():
    z = torch.arange(12, dtype=torch.float).view(1, 6, 2)
    mask = torch.ones(1, 6, dtype=torch.long)
    out = span_mean(z, mask, torch.tensor([[[1, 2], [-1, -1]]]))
    assert out[0, 0].tolist() == [3.0, 4.0] and out[0, 1].tolist() == [0.0, 0.0]


def test_system_choice_is_checked(tiny_bert):
    with pytest.raises(ValueError):
        EvalSystem("jaket", "none", lm=str(tiny_bert))
    with pytest.raises(ValueError):
        EvalSystem("bert", "none", lm=str(tiny_bert))


def test_systems_entity_and_text_features(tiny_bert, tiny_store, tmp_path):
    texts = ["Alice Moreau was born in Paris .", "Globex is based in Berlin ."]
    spans = [[(0, 12), (25, 30)], [(0, 6), (19, 25)]]
    with KGStore(tiny_store) as kg:
        n = kg.num_entities
        q2i = {lab: i for i, lab in kg.query("SELECT entity_id, label FROM entities")}
        ents = [[q2i["Alice Moreau"], q2i["Paris"]], [q2i["Globex"], q2i["Berlin"]]]
        out = {}
        for name in ("lm", "lm+gnn", "lm+gnn+m"):
            s = EvalSystem(name, "none", lm=str(tiny_bert), work=tmp_path)
            e_text, e_km = s.entity_features(kg)
            assert e_text.shape == (n, 32) and (e_km is None) == (name == "lm")
            pooled, whole = s.encode_spans(texts, spans, ents, e_km)
            assert pooled.shape == (2, 2, 32) and whole.shape == (2, 32)
            out[name] = pooled
        assert torch.allclose(out["lm"], out["lm+gnn"])            # late fusion: text untouched
        assert not torch.allclose(out["lm"], out["lm+gnn+m"])      # early fusion: E^KM merged before LM2
        # cached: a new system object reads the same features back from WORK/cache
        again = EvalSystem("lm+gnn+m", "none", lm=str(tiny_bert), work=tmp_path)
        assert torch.equal(again.entity_features(kg)[1], s.entity_features(kg)[1])
        assert any(p.name.startswith("lm_gnn_m-") for p in (tmp_path / "cache").iterdir())


def _synthetic_data(root):
    """16 FewRel-shaped relations, a MetaQA-shaped movie KB with questions, a CoDEx-shaped KG."""
    rng = random.Random(0)
    fr = {}
    for r in range(16):
        fr[f"P{100 + r}"] = [{"tokens": f"the head{r} x{i} has relation {r} with tail{r} y{i} .".split(),
                             "h": [f"head{r} x{i}", f"Q{r * 100 + i}", [[1, 2]]],
                             "t": [f"tail{r} y{i}", f"Q{5000 + r * 100 + i}", [[7, 8]]]} for i in range(12)]
    (root / "eval/fewrel").mkdir(parents=True)
    (root / "eval/fewrel/val_wiki.json").write_text(json.dumps(fr))
    (root / "eval/fewrel/pid2name.json").write_text(json.dumps({"P31": ["instance of", "type"]}))
    (root / "labels").mkdir()
    with gzip.open(root / "labels/qid_label_description.tsv.gz", "wt") as f:
        f.write("qid\tlabel\tls\tdescription\tds\nQ1\thead0 x1\tx\tsomething\tx\nQ7\ttype seven\tx\t\t\n")
    (root / "labels/wiki27k").mkdir()
    (root / "labels/wiki27k/train.txt").write_text("Q1\tP31\tQ7\nQ5001\tP31\tQ7\nQ2\tP31\tQ8\n")
    m = root / "eval/metaqa"
    (m / "1-hop").mkdir(parents=True)
    (m / "2-hop").mkdir()
    movies, people = [f"Movie {i}" for i in range(30)], [f"Person {i}" for i in range(10)]
    years = [str(1990 + i) for i in range(5)]
    kb = [(mv, "directed_by", people[i % 10]) for i, mv in enumerate(movies)]
    kb += [(mv, "release_year", years[i % 5]) for i, mv in enumerate(movies)]
    (m / "entity2text.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(movies + people + years)))
    with gzip.open(m / "kb_reconstructed_from_keallm_ids.txt.gz", "wt") as f:
        f.write("".join(f"{h}|{r}|{t}\n" for h, r, t in kb))
    director = {h: t for h, r, t in kb if r == "directed_by"}
    year = {h: t for h, r, t in kb if r == "release_year"}
    for split in ("dev", "test"):
        lines1, lines2 = [], []
        for _ in range(60):
            mv = rng.choice(movies)
            lines1.append(f"who directed [{mv}]\t{director[mv]}" if rng.random() < 0.5 else
                          f"when was [{mv}] released\t{year[mv]}")
            p = rng.choice(people)
            ys = sorted({year[x] for x in movies if director[x] == p})
            lines2.append(f"when were the films directed by [{p}] released\t{'|'.join(ys)}")
        (m / "1-hop" / f"{split}.txt").write_text("\n".join(lines1) + "\n")
        (m / "2-hop" / f"{split}.txt").write_text("\n".join(lines2) + "\n")
    c = root / "eval/codex"
    (c / "triples/codex-m").mkdir(parents=True)
    (c / "types").mkdir()
    (c / "relations/en").mkdir(parents=True)
    types, triples = {}, []
    for i in range(200):
        cls = i % 4
        types[f"Q{i + 1}"] = [f"Q90{cls}"] + (["Q5"] if cls == 0 else [])
        triples.append(f"Q{i + 1}\tP{10 + cls}\tQ{1000 + cls}")
    for k in range(4):
        types[f"Q{1000 + k}"] = ["Q999"]
    (c / "types/entity2types.json").write_text(json.dumps(types))
    (c / "relations/en/relations.json").write_text(json.dumps({"P10": {"label": "ten", "description": "x"}}))
    for split, part in (("train", triples[:160]), ("valid", triples[160:180]), ("test", triples[180:])):
        (c / "triples/codex-m" / f"{split}.txt").write_text("\n".join(part) + "\n")
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return _synthetic_data(tmp_path_factory.mktemp("synthetic"))


@pytest.mark.parametrize("task,system", [("fewrel", "lm+gnn"), ("metaqa", "lm+gnn+m"), ("entity-cls", "lm+gnn")])
def test_cli_end_to_end(task, system, synthetic, tiny_bert, tmp_path):
    out = tmp_path / "r.json"
    args = ["--task", task, "--checkpoint", "none", "--system", system, "--lm", str(tiny_bert), "--out", str(out),
            "--data", str(synthetic), "--work", str(tmp_path / "work"), "--episodes", "20", "--adapt-steps", "5",
            "--train-questions", "40", "--test-questions", "50", "--epochs", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["task"] == task and r["system"] == system and r["headline"] and r["wall_seconds"] >= 0
    assert "| system |" in res.output
    for cell in r["headline"].values():
        assert 0.0 <= cell["mean"] <= 1.0
    if task == "fewrel":
        assert set(r["relation_groups"][0]).isdisjoint(r["relation_groups"][1])
        assert r["5-way 1-shot"]["test_groups"]["n"] == 40 and "10-way 1-shot" in r
    if task == "metaqa":
        assert set(r["settings"]) == {"1-hop full", "2-hop full", "1-hop 50%", "2-hop 50%"}
        assert r["settings"]["1-hop full"]["answer_reachable"] == 1.0
        assert r["settings"]["1-hop 50%"]["answer_reachable"] < 1.0
    if task == "entity-cls":
        assert sorted(r["classes"]) == ["Q900", "Q901", "Q902", "Q903", "Q999"]     # Q5 dropped
        assert r["labelled_entities"] == 204 and sum(r["split_sizes"]) == 204


def test_cli_usage_errors(tiny_bert, synthetic, tmp_path):
    res = CliRunner().invoke(main, ["--task", "fewrel", "--out", str(tmp_path / "x.json"), "--system", "jaket",
                                    "--data", str(synthetic)])
    assert res.exit_code == 2 and "run directory" in res.output
    res = CliRunner().invoke(main, ["--checkpoint", "none"])
    assert res.exit_code == 2
