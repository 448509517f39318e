"""The assembly stage on hand-made stage outputs: dense ids, dangling triples, categories, descriptions, text."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from kg_store import store
from pipelines.assemble import AssembleOptions, assemble


def _write(folder: Path, name: str, rows: list[dict], schema: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(folder / f"{name}.parquet")


S = pl.String


@pytest.fixture()
def stage_dirs(tmp_path: Path) -> tuple[Path, Path]:
    wd, wp = tmp_path / "wikidata", tmp_path / "wikipedia"
    _write(wd, "items", [
        ("Q10", "Paris", "capital of France", "Paris"),
        ("Q2", "France", "country in Europe", "France"),
        ("Q5", "human", "species", None),
        ("Q6", "city", "large settlement", None),
        ("Q7", "Ada", None, None),
        ("Q8", None, None, None),
        ("Q2", "France dup", None, None),
    ], {"qid": S, "label": S, "description": S, "enwiki_title": S})
    _write(wd, "properties", [("P31", "instance of", "class of", "wikibase-item"),
                              ("P17", "country", "sovereign state", "wikibase-item"),
                              ("P1082", "population", None, "quantity")],
           {"pid": S, "label": S, "description": S, "datatype": S})
    _write(wd, "aliases", [("Q10", "City of Light"), ("Q2", "French Republic")], {"qid": S, "alias": S})
    _write(wd, "claims", [
        ("Q10", "P17", "Q2"), ("Q10", "P17", "Q2"), ("Q10", "P31", "Q6"), ("Q7", "P31", "Q5"),
        ("Q8", "P31", "Q5"), ("Q2", "P31", "Q999"), ("Q10", "P999", "Q2"), ("Q404", "P17", "Q2"),
    ], {"head_qid": S, "pid": S, "tail_qid": S})
    _write(wd, "rejects", [("wikidata", "dump", "7", "malformed_json", "{oops", "dropped")],
           {"stage": S, "source": S, "position": S, "reason": S, "raw": S, "action": S})
    _write(wp, "documents", [(100, "Paris", "Q10"), (200, "Nowhere", None)],
           {"page_id": pl.Int64, "title": S, "qid": S})
    _write(wp, "passages", [(100, 0, "Paris is the capital of France."), (100, 1, "It is big."),
                            (200, 0, "Nowhere links France.")],
           {"page_id": pl.Int64, "idx": pl.Int32, "text": S})
    _write(wp, "mentions", [(100, 0, "Q2", 24, 30, "anchor"), (200, 0, "Q2", 14, 20, "anchor"),
                            (200, 0, "Q404", 0, 7, "alias")],
           {"page_id": pl.Int64, "idx": pl.Int32, "qid": S, "char_start": pl.Int32, "char_end": pl.Int32,
            "source": S})
    _write(wp, "rejects", [], {"stage": S, "source": S, "position": S, "reason": S, "raw": S, "action": S})
    return wd, wp


@pytest.mark.parametrize("other", [False, True])
def test_assemble(tmp_path: Path, stage_dirs: tuple[Path, Path], other: bool):
    wd, wp = stage_dirs
    con = store.create(tmp_path / f"s{other}.duckdb")
    stats = assemble(con, wd, AssembleOptions(top_categories=1, category_other=other,
                                              text_dirs=[("wikipedia", wp)]))
    assert store.check_integrity(con) == []
    q = con.execute
    # dense ids in QID order; the duplicate Q2 line is dropped and reported
    assert q("SELECT entity_id, qid FROM entities ORDER BY 1").fetchall() == [
        (0, "Q2"), (1, "Q5"), (2, "Q6"), (3, "Q7"), (4, "Q8"), (5, "Q10")]
    assert stats["duplicate_entities"] == 1
    # relations: item-valued properties + any pid used by claims; quantity properties are not relations
    assert [p for (p,) in q("SELECT pid FROM relations ORDER BY relation_id").fetchall()] == ["P17", "P31", "P999"]
    # triples: distinct, both ends present; dangling ones rejected with reason
    assert q("SELECT count(*) FROM triples").fetchall()[0][0] == 5
    assert stats["triples_both_ends_present"] == 6 and stats["dangling_triples"] == 2
    reasons = dict(q("SELECT reason, count(*) FROM rejects GROUP BY ALL").fetchall())
    assert reasons["dangling_triple_tail"] == 1 and reasons["dangling_triple_head"] == 1
    assert reasons["malformed_json"] == 1 and reasons["mention_unknown_entity"] == 1
    # categories: top-1 class is 'human' (2 instances); Paris's 'city' is collapsed
    assert q("SELECT category_id, qid, label FROM categories ORDER BY 1").fetchall() == (
        [(0, "Q5", "human")] + ([(1, None, "other")] if other else []))
    cats = dict(q("SELECT qid, category_id FROM entities").fetchall())
    assert cats["Q7"] == 0 and cats["Q8"] == 0 and cats["Q2"] == (1 if other else None)
    assert cats["Q10"] == (1 if other else None)
    # descriptions: wikipedia lead > "label, wikidata description" > label > nothing
    rows = {r[0]: r[1:] for r in q("SELECT qid, description, desc_source, desc_mention_start, desc_mention_end "
                                   "FROM entities").fetchall()}
    assert rows["Q10"] == ("Paris is the capital of France.", "wikipedia", 0, 5)
    assert rows["Q2"] == ("France, country in Europe", "wikidata", 0, 6)
    assert rows["Q7"] == ("Ada", "label", 0, 3)
    assert rows["Q8"] == (None, None, None, None)
    # text: dense doc/passage ids, mentions re-keyed, unknown-entity mentions rejected
    assert q("SELECT doc_id, title, entity_id, source, source_id FROM documents ORDER BY 1").fetchall() == [
        (0, "Paris", 5, "wikipedia", "100"), (1, "Nowhere", None, "wikipedia", "200")]
    assert q("SELECT passage_id, doc_id, idx FROM passages ORDER BY 1").fetchall() == [(0, 0, 0), (1, 0, 1), (2, 1, 0)]
    surfaces = q("SELECT surface FROM mentions_in_context ORDER BY passage_id").fetchall()
    assert surfaces == [("France",), ("France",)]
    assert q("SELECT count(*) FROM aliases").fetchall()[0][0] == 2
