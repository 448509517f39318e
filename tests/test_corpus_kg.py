"""build-corpus-kg on a tiny hand-made data folder: FewRel pairs never become pretraining triples, labels come
from the label table (else Wiki27K, else the mention's surface form), and the text is linked."""

from __future__ import annotations

import gzip
import json

from kg_store.store import KGStore
from pipelines.corpus_kg import build_corpus_kg


def _write(data):
    (data / "corpus").mkdir(parents=True)
    doc = {"docid": "1", "text": "Ada Lovelace was born in London.", "entities": [
        {"uri": "Q1", "boundaries": [0, 12], "surfaceform": "Ada Lovelace"},
        {"uri": "Q2", "boundaries": [25, 31], "surfaceform": "London"}],
        "triples": [{"subject": {"uri": "Q1"}, "predicate": {"uri": "P19"}, "object": {"uri": "Q2"}}]}
    doc2 = {"docid": "2", "text": "Byron wrote poems.", "entities": [
        {"uri": "Q3", "boundaries": [0, 5], "surfaceform": "Byron"}],
        "triples": [{"subject": {"uri": "Q3"}, "predicate": {"uri": "P40"}, "object": {"uri": "Q1"}}]}
    (data / "corpus" / "sample.jsonl").write_text(json.dumps(doc) + "\n" + json.dumps(doc2) + "\n")
    (data / "labels" / "wiki27k").mkdir(parents=True)
    with gzip.open(data / "labels" / "qid_label_description.tsv.gz", "wt") as f:
        f.write("qid\tlabel\tlabel_source\tdescription\tdescription_source\n"
                "Q1\tAda Lovelace\tx\tEnglish mathematician\tx\n")
    (data / "labels" / "wiki27k" / "train.txt").write_text("Q2\tP17\tQ4\n")
    (data / "labels" / "wiki27k" / "entity2label.txt").write_text("Q2\tLondon\n")
    (data / "eval" / "fewrel").mkdir(parents=True)
    (data / "eval" / "fewrel" / "val_wiki.json").write_text(json.dumps(
        {"P40": [{"tokens": [], "h": ["byron", "Q3", [[0]]], "t": ["ada", "Q1", [[1]]]}]}))


def test_corpus_kg_excludes_fewrel_pairs_and_links_text(tmp_path):
    data = tmp_path / "data"
    _write(data)
    stats = build_corpus_kg(data, tmp_path / "c.duckdb")
    assert stats["triples_fewrel_pairs_excluded"] == 1 and stats["entities_text_from_surface"] == 1
    with KGStore(tmp_path / "c.duckdb") as kg:
        triples = set(kg.query("SELECT h.qid, r.pid, t.qid FROM triples JOIN entities h ON h.entity_id = head_id "
                               "JOIN relations r USING (relation_id) JOIN entities t ON t.entity_id = tail_id"))
        assert triples == {("Q1", "P19", "Q2"), ("Q2", "P17", "Q4")}          # Q3 -P40-> Q1 is a FewRel pair
        text = dict(kg.query("SELECT qid, description FROM entities"))
        assert text["Q1"] == "Ada Lovelace, English mathematician" and text["Q3"] == "Byron"
        assert text["Q2"] == "London"                                           # Wiki27K label
        assert kg.scalar("SELECT count(*) FROM mentions") == 3
