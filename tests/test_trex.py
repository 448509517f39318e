"""Stage `corpus` (pipelines.trex): offset repair, rejects, overlaps, input formats, real T-REx-shaped data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import polars as pl
import pytest

from pipelines.trex import parse_trex, repair_offsets, to_qid


def _joined(out: Path) -> pl.DataFrame:
    passages = pl.read_parquet(out / "passages.parquet")
    mentions = pl.read_parquet(out / "mentions.parquet")
    joined = mentions.join(passages, on=["page_id", "idx"], how="left")
    return joined.with_columns(surface=pl.struct("text", "char_start", "char_end").map_elements(
        lambda r: r["text"][r["char_start"]:r["char_end"]], return_dtype=pl.String))


def _surfaces_by_doc(records: list[dict]) -> list[set[tuple[str, str]]]:
    return [{(to_qid(e["uri"]), e["surfaceform"]) for e in rec.get("entities", [])} for rec in records]


@pytest.mark.parametrize(("uri", "qid"), [
    ("Q42", "Q42"), ("http://www.wikidata.org/entity/Q42", "Q42"), ("https://www.wikidata.org/wiki/Q7", "Q7"),
    ("None", None), (None, None), ("2010-01-01T00:00:00Z^^http://www.w3.org/2001/XMLSchema#dateTime", None),
    ("Q0", None), ("P31", None),
])
def test_to_qid(uri: object, qid: str | None):
    assert to_qid(uri) == qid


def test_repair_offsets_nearest():
    text = "Paris is in France. Paris again."
    assert repair_offsets(text, "Paris", 2, 7) == 0
    assert repair_offsets(text, "Paris", 18, 23) == 20
    assert repair_offsets(text, "Paris", 18, 23, window=1) is None
    assert repair_offsets(text, "Berlin", 0, 6) is None


def test_sample_repairs_shifted_offsets(shared_data: Path, tmp_path: Path):
    path = shared_data / "corpus" / "sample.jsonl"
    records = [orjson.loads(line) for line in path.open("rb")]
    stats = parse_trex(path, tmp_path)
    assert stats["records"] == stats["documents"] == 1000
    assert stats["entities"] == 10_977
    assert stats["offsets_repaired"] > 1000
    assert stats["offsets_exact"] + stats["offsets_repaired"] + stats["offset_mismatch"] + stats["invalid_uri"] \
        + stats["literal_values"] == stats["entities"]
    joined = _joined(tmp_path)
    assert joined.height == stats["mentions"] > 7000
    assert set(joined["source"]) == {"corpus"}
    surfaces = _surfaces_by_doc(records)
    for page_id, qid, surface in joined.select("page_id", "qid", "surface").rows():
        assert (qid, surface) in surfaces[page_id]
    for _, group in joined.group_by("page_id", "idx"):  # no overlaps left
        spans = sorted(group.select("char_start", "char_end").rows())
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    # one shifted mention, repaired to the true position of its surface form in the document
    for page_id, rec in enumerate(records):
        bad = [e for e in rec["entities"] if to_qid(e["uri"])
               and rec["text"][e["boundaries"][0]:e["boundaries"][1]] != e["surfaceform"]]
        if bad:
            e = bad[0]
            true_start = repair_offsets(rec["text"], e["surfaceform"], *e["boundaries"])
            doc = joined.filter((pl.col("page_id") == page_id) & (pl.col("qid") == to_qid(e["uri"])))
            starts = {r[0] + r[1] for r in doc.select("doc_start", "char_start").rows()}
            assert true_start in starts
            break
    docs = pl.read_parquet(tmp_path / "documents.parquet")
    assert docs["docid"][0] == records[0]["docid"] and docs["qid"][0] == records[0]["uri"]
    assert (tmp_path / "stats.json").is_file()


def _write_lines(path: Path, records: list, opener=open) -> None:
    with opener(path, "wb") as handle:
        for rec in records:
            handle.write(rec if isinstance(rec, bytes) else orjson.dumps(rec))
            handle.write(b"\n")


HAND = [
    {"docid": "d1", "title": "Doc one", "uri": "http://www.wikidata.org/entity/Q1",
     "text": "Douglas Adams wrote books. He lived in Cambridge, England.",
     "entities": [
         {"uri": "http://www.wikidata.org/entity/Q42", "boundaries": [0, 13], "surfaceform": "Douglas Adams"},
         {"uri": "Q43", "boundaries": [0, 7], "surfaceform": "Douglas"},            # overlaps: shorter dropped
         {"uri": "Q350", "boundaries": [41, 50], "surfaceform": "Cambridge"},       # shifted by +2: repaired
         {"uri": "Q21", "boundaries": [5, 12], "surfaceform": "England"},           # 46 chars away: rejected (window=20)
         {"uri": "Q99", "boundaries": [0, 4], "surfaceform": "Nowhere"},            # absent: rejected
         {"uri": "None", "boundaries": [14, 19], "surfaceform": "wrote"},           # not an entity
         {"uri": "+2^^http://www.w3.org/2001/XMLSchema#decimal", "boundaries": [0, 1], "surfaceform": "2"},
         {"uri": "Q42", "boundaries": [0, 13], "surfaceform": "Douglas Adams"},     # duplicate
     ]},
    b'{"docid": "broken", "text": "no closing',
    {"docid": "d3", "entities": []},
    {"docid": "d4", "text": "A second. Document here.", "entities": [
        {"uri": "Q5", "boundaries": [2, 8], "surfaceform": "second"}]},
]


def _check_hand(out: Path, stats: dict) -> None:
    assert stats["records"] == 4 and stats["documents"] == 2
    assert stats["offsets_repaired"] == 1 and stats["offset_mismatch"] == 2
    assert stats["overlapping_dropped"] == 1 and stats["duplicates"] == 1
    assert stats["invalid_uri"] == 1 and stats["literal_values"] == 1
    rejects = pl.read_parquet(out / "rejects.parquet")
    assert dict(rejects.group_by("reason").len().rows()) == {
        "offset_mismatch": 2, "invalid_uri": 1, "bad_json": 1, "missing_text": 1}
    assert set(rejects.filter(pl.col("reason") == "offset_mismatch")["action"]) == {"dropped"}
    joined = _joined(out)
    assert sorted(joined.select("qid", "surface").rows()) == [
        ("Q350", "Cambridge"), ("Q42", "Douglas Adams"), ("Q5", "second")]
    docs = pl.read_parquet(out / "documents.parquet")
    assert docs.select("page_id", "title", "qid", "docid").rows() == [(0, "Doc one", "Q1", "d1"),
                                                                       (1, None, None, "d4")]


def test_hand_made_lines(tmp_path: Path):
    path = tmp_path / "hand.jsonl"
    _write_lines(path, HAND)
    _check_hand(tmp_path / "out", parse_trex(path, tmp_path / "out", window=20))


def test_gzip_and_json_array(tmp_path: Path):
    gz = tmp_path / "hand.jsonl.gz"
    _write_lines(gz, HAND, gzip.open)
    _check_hand(tmp_path / "gz", parse_trex(gz, tmp_path / "gz", window=20))
    array = tmp_path / "hand.json"
    array.write_bytes(orjson.dumps([r for r in HAND if isinstance(r, dict)], option=orjson.OPT_INDENT_2))
    stats = parse_trex(array, tmp_path / "array", window=20)
    assert stats["documents"] == 2 and stats["mentions"] == 3


def test_truncated_gzip_keeps_records(shared_data: Path, tmp_path: Path):
    data = gzip.compress((shared_data / "corpus" / "sample.jsonl").read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    stats = parse_trex(cut, tmp_path / "out")
    assert stats["truncated"] is True
    assert 300 < stats["documents"] < 1000
    assert stats["rejects_by_reason"].get("bad_json", 0) == 0
    assert stats["rejects_by_reason"]["truncated_input"] == 1


def test_lama_streams(shared_data: Path, tmp_path: Path):
    path = shared_data / "corpus" / "lama" / "lama_trex_sentences.jsonl.gz"
    stats = parse_trex(path, tmp_path, max_docs=20_000)
    assert stats["documents"] == 20_000
    assert stats["mentions"] + stats["overlapping_dropped"] == stats["entities"] - stats["offset_mismatch"]
    joined = _joined(tmp_path)
    assert (joined["surface"].str.len_chars() > 0).all()
    first = json.loads(gzip.open(path, "rt").readline())
    doc0 = joined.filter(pl.col("page_id") == 0)
    assert set(doc0.select("qid", "surface").rows()) == {(to_qid(e["uri"]), e["surfaceform"])
                                                         for e in first["entities"]}


@pytest.mark.slow
def test_lama_full(shared_data: Path, tmp_path: Path):
    stats = parse_trex(shared_data / "corpus" / "lama" / "lama_trex_sentences.jsonl.gz", tmp_path)
    assert stats["documents"] == 117_153 and not stats["truncated"]
