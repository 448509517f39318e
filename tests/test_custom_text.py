"""import-tsv --corpus: linked T-REx-shaped text attached to a TSV-imported KG (spans, rejects, re-keying)."""

from __future__ import annotations

import json

import pytest

from flows.import_tsv import build_from_tsv
from kg_store.store import KGStore


@pytest.fixture
def tsv_kg(tmp_path):
    (tmp_path / "E.tsv").write_text("id\tlabel\tdescription\n"
                                    "Q1\tAda Lovelace\tAda Lovelace, English mathematician\n"
                                    "Q2\tLondon\tLondon, capital of England\n"
                                    "Q3\tAnalytical Engine\t\n")
    (tmp_path / "T.tsv").write_text("head\trelation\ttail\nQ1\tP19\tQ2\nQ1\tP800\tQ3\n")
    text = "Ada Lovelace was born in London. She wrote about the Analytical Engine."
    docs = [
        {"docid": "d1", "text": text, "entities": [
            {"uri": "Q1", "boundaries": [0, 12], "surfaceform": "Ada Lovelace"},
            {"uri": "http://www.wikidata.org/entity/Q2", "boundaries": [27, 33], "surfaceform": "London"},  # shifted
            {"uri": "Q3", "boundaries": [52, 69], "surfaceform": "Analytical Engine"},
            {"uri": "Q999", "boundaries": [35, 38], "surfaceform": "She"}]},                    # not in the KG
        {"docid": "d2", "text": "London is large.", "entities": [
            {"uri": "Q2", "boundaries": [0, 6], "surfaceform": "London"}]},
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    return tmp_path


def test_corpus_attaches_to_tsv_kg(tsv_kg):
    out = tsv_kg / "k.duckdb"
    stats = build_from_tsv(out, tsv_kg / "E.tsv", tsv_kg / "T.tsv", header=True, corpus=[tsv_kg / "c.jsonl"])
    assert stats["documents"] == 2 and stats["mentions"] == 4 and stats["mentions_unknown_entity"] == 1
    with KGStore(out) as kg:
        rows = kg.query("SELECT e.qid, substr(p.text, m.char_start + 1, m.char_end - m.char_start), m.source "
                        "FROM mentions m JOIN passages p USING (passage_id) JOIN entities e USING (entity_id) "
                        "ORDER BY m.passage_id, m.char_start")
        assert [(q, s) for q, s, _ in rows] == [("Q1", "Ada Lovelace"), ("Q2", "London"),
                                                ("Q3", "Analytical Engine"), ("Q2", "London")]
        assert {src for _, _, src in rows} == {"corpus"}
        reasons = dict(kg.query("SELECT reason, count(*) FROM rejects GROUP BY ALL"))
        assert reasons.get("mention_unknown_entity") == 1
        assert kg.query("SELECT DISTINCT source FROM documents") == [("corpus:c.jsonl",)]
        assert kg.scalar("SELECT count(*) FROM triples") == 2
    assert not (tsv_kg / "k.duckdb.work" / "import-tsv").exists()      # stage outputs cleaned up
