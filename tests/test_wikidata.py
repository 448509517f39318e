"""Stage `wikidata`: counts on the demo sample (miniwiki), real records, one-per-line input, damaged input."""

from __future__ import annotations

import bz2
import functools
import gzip
import json
from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pytest

from pipelines import wikidata as stage
from pipelines.dump_io import open_binary
from pipelines.wikidata import parse_wikidata

SAMPLE_DUMP = Path(__file__).resolve().parents[1] / "data" / "sample" / "mini-wikidata-all.json.bz2"


def rows(out: Path, name: str, columns: str = "*") -> list[tuple]:
    with duckdb.connect() as con:
        return con.sql(f"SELECT {columns} FROM read_parquet('{out / name}.parquet')").fetchall()


@functools.cache
def dump_lines(path: Path) -> list[bytes]:
    with open_binary(path) as handle:
        return handle.read().split(b"\n")


@functools.cache
def reference(path: Path) -> dict:
    """An independent, deliberately plain reading of the dump (orjson, one entity at a time)."""
    ref: dict = {"items": set(), "value": [], "deprecated": [], "nonvalue": 0, "entities": 0}
    for line in dump_lines(path):
        line = line.strip().rstrip(b",")
        if line in (b"", b"[", b"]"):
            continue
        entity = orjson.loads(line)
        ref["entities"] += 1
        if entity["type"] != "item":
            continue
        ref["items"].add(entity["id"])
        for statements in entity["claims"].values() if isinstance(entity["claims"], dict) else ():
            for st in statements:
                snak = st["mainsnak"]
                if snak.get("datatype") != "wikibase-item":
                    continue
                if snak["snaktype"] != "value":
                    ref["nonvalue"] += st["rank"] != "deprecated"
                    continue
                value = snak["datavalue"]["value"]
                triple = (entity["id"], snak["property"], value.get("id") or f"Q{value['numeric-id']}")
                ref["deprecated" if st["rank"] == "deprecated" else "value"].append(triple)
    return ref


# --- the demo sample (inside the repo) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mini")
    return out, parse_wikidata(SAMPLE_DUMP, out)


@pytest.fixture(scope="module")
def expected(sample_dir) -> dict:
    return json.loads((sample_dir / "expected.json").read_text())


def test_outputs_and_stats_file(mini):
    out, stats = mini
    for name in ("items", "properties", "aliases", "claims", "rejects"):
        assert (out / f"{name}.parquet").is_file()
    assert json.loads((out / "stats.json").read_text()) == stats
    assert not (out / "_SUCCESS").exists()  # the flow writes it
    assert stats["lines"] == 20_491 and stats["layout_lines"] == 2
    assert stats["seconds"] > 0


def test_miniwiki_counts(mini, expected):
    out, stats = mini
    counts = expected["counts"]
    assert stats["items"] == counts["items"] == len(rows(out, "items"))
    assert stats["properties"] == counts["properties"] == len(rows(out, "properties"))
    assert stats["entities"] == counts["entities"]
    ((label, desc, enwiki),) = rows(out, "items", "count(label), count(description), count(enwiki_title)")
    assert label == stats["items_with_en_label"] == counts["items_with_en_label"]
    assert desc == stats["items_with_en_description"] == counts["items_with_en_description"]
    assert enwiki == stats["items_with_enwiki"] == counts["items_with_enwiki_sitelink"]
    ((with_aliases,),) = rows(out, "aliases", "count(DISTINCT qid) FILTER (qid LIKE 'Q%')")
    assert with_aliases == stats["items_with_en_aliases"] == counts["items_with_en_aliases"]


def test_miniwiki_claims(mini, expected):
    """expected.json counts item-valued statements of every rank; the stage skips the deprecated ones."""
    out, stats = mini
    counts = expected["counts"]
    ref = reference(SAMPLE_DUMP)
    assert len(ref["value"]) + len(ref["deprecated"]) == counts["statements_wikibase_item"]
    both = [t for t in ref["value"] + ref["deprecated"] if t[2] in ref["items"]]
    assert len(both) == counts["triples_with_both_ends_present"]
    assert len(set(both)) == counts["triples_with_both_ends_present_distinct"]

    claims = rows(out, "claims")
    assert stats["deprecated_skipped"] == len(ref["deprecated"]) == 28
    assert stats["novalue_somevalue_skipped"] == ref["nonvalue"] == 3
    assert len(claims) == stats["claims"] == counts["statements_wikibase_item"] - 28 == 113_621
    assert Counter(claims) == Counter(ref["value"])
    kept_both = [t for t in claims if t[2] in ref["items"]]
    assert (len(kept_both), len(set(kept_both))) == (109_619, 109_612)  # 109,626 / 109,619 minus deprecated
    assert sum(1 for t in claims if t[1] == "P31") > 10_000  # P31 stays in claims.parquet


def test_miniwiki_examples(mini, expected):
    out, _ = mini
    claims = set(rows(out, "claims"))
    items = {qid: (label, desc) for qid, label, desc, _ in rows(out, "items")}
    properties = {pid: label for pid, label, _, _ in rows(out, "properties")}
    for example in expected["examples"]:
        triple = example["triple"]
        assert (triple["subject"], triple["property"], triple["object"]) in claims
        assert items[triple["subject"]][0] == triple["subject_label"]
        assert items[triple["object"]][0] == triple["object_label"]
        assert properties[triple["property"]] == triple["property_label"]
        mention = example["mention"]
        assert items[mention["qid"]] == (mention["qid_label"], mention["qid_description"])
    titles = dict(rows(out, "items", "qid, enwiki_title"))
    assert titles["Q2973"] == "Darmstadt"


def test_miniwiki_no_label_rejects(mini):
    out, stats = mini
    rejects = rows(out, "rejects")
    assert stats["rejects_by_reason"] == {"no_english_label": 486}  # 485 items + P3722
    assert {(r[0], r[1], r[3], r[5]) for r in rejects} == {
        ("wikidata", SAMPLE_DUMP.name, "no_english_label", "kept")
    }
    lines = dump_lines(SAMPLE_DUMP)
    for _, _, position, _, raw, _ in rejects[:50] + rejects[-5:]:
        entity = orjson.loads(lines[position - 1].rstrip(b","))
        assert "en" not in entity["labels"]
        assert raw == lines[position - 1].rstrip(b",").decode()[:500]
        assert len(raw) <= 500
    positions = [r[2] for r in rejects]
    assert positions == sorted(positions)
    no_label = {r[4][:60] for r in rejects if '"id":"P3722"' in r[4]}
    assert no_label  # the property without an English label is kept and reported too


# --- real records (../shared/data) ------------------------------------------------------------------------------


def test_real_sample(shared_data, tmp_path):
    dump = shared_data / "wikidata" / "wikidata_sample_all.json.bz2"
    stats = parse_wikidata(dump, tmp_path)
    ref = reference(dump)
    assert stats["entities"] == ref["entities"] == 735
    assert (stats["items"], stats["properties"]) == (733, 2)
    claims = rows(tmp_path, "claims")
    assert Counter(claims) == Counter(ref["value"])
    assert stats["deprecated_skipped"] == len(ref["deprecated"]) > 0
    assert not set(ref["deprecated"]) - set(ref["value"]) & set(claims)
    assert stats["novalue_somevalue_skipped"] == ref["nonvalue"] > 0
    # somevalue/novalue snaks (e.g. Q1 P1419 somevalue, Q233 P47 novalue) are not turned into triples
    assert len(claims) == len(ref["value"]) < 11_597 - len(ref["deprecated"])
    # an old-style value with only "numeric-id" (no "id")
    assert ("Q131261", "P21", "Q6581097") in claims
    assert not any(t is None or not t.startswith("Q") for _, _, t in claims)
    props = dict((pid, dt) for pid, _, _, dt in rows(tmp_path, "properties"))
    assert props == {"P31": "wikibase-item", "P3111": "external-id"}
    # `"sitelinks": []` (Q30264236) is read as "no enwiki title", not as an error
    assert ("Q30264236", None) in set(rows(tmp_path, "items", "qid, enwiki_title"))
    assert set(stats["rejects_by_reason"]) == {"no_english_label"}


def test_small_chunks_and_python_path(shared_data, tmp_path, monkeypatch):
    """Chunk boundaries (lines longer than a chunk) and the orjson path give the same output as the default."""
    dump = shared_data / "wikidata" / "short_stream.json.bz2"
    parse_wikidata(dump, tmp_path / "default")
    parse_wikidata(dump, tmp_path / "small", chunk_bytes=1 << 17)  # some lines are longer than that
    monkeypatch.setattr(stage.sql, "load_chunk", lambda path, size: "SELECT no_such_column")
    python = parse_wikidata(dump, tmp_path / "python")
    assert python["python_fallback_chunks"] > 0
    for name in ("items", "properties", "aliases", "claims", "rejects"):
        default = rows(tmp_path / "default", name)
        assert rows(tmp_path / "small", name) == default
        assert Counter(rows(tmp_path / "python", name)) == Counter(default)


def test_short_stream_one_entity_per_line(shared_data, tmp_path):
    dump = shared_data / "wikidata" / "short_stream.json.bz2"
    stats = parse_wikidata(dump, tmp_path)
    ref = reference(dump)
    assert stats["items"] == ref["entities"] == 635
    assert stats["layout_lines"] == 0
    assert Counter(rows(tmp_path, "claims")) == Counter(ref["value"])


# --- hand-made dumps: bad lines, damaged and gzip input ----------------------------------------------------------


def entity(qid: str, label: str | None = None, claims: dict | None = None, **extra) -> dict:
    record = {
        "type": "item",
        "id": qid,
        "labels": {"en": {"language": "en", "value": label}} if label else {},
        "descriptions": {},
        "aliases": {},
        "claims": claims or {},
        "sitelinks": {},
    }
    record.update(extra)
    return record


def statement(pid: str, target: int | None, rank: str = "normal", old_style: bool = False) -> dict:
    if target is None:
        snak = {"snaktype": "novalue", "property": pid, "datatype": "wikibase-item"}
    else:
        value = {"entity-type": "item", "numeric-id": target}
        if not old_style:
            value["id"] = f"Q{target}"
        snak = {
            "snaktype": "value",
            "property": pid,
            "datavalue": {"value": value, "type": "wikibase-entityid"},
            "datatype": "wikibase-item",
        }
    return {"mainsnak": snak, "type": "statement", "rank": rank}


def write_dump(path: Path, lines: list[bytes]) -> Path:
    """The real layout: `[`, entities each followed by `,` except the last, `]`."""
    data = b"[\n" + b",\n".join(lines) + b"\n]\n"
    if path.suffix == ".bz2":
        data = bz2.compress(data, compresslevel=1)
    elif path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def handmade() -> list[bytes]:
    return [
        orjson.dumps(
            entity("Q1", "one", {"P31": [statement("P31", 5)], "P17": [statement("P17", 2, "deprecated")]})
        ),
        orjson.dumps(
            entity("Q2", "two", {"P17": [statement("P17", 1, old_style=True), statement("P17", None)]})
        ),
        b'{"type":"item","id":"Q3","labels":{"en":{"language":"en","value":"three"}',  # cut short: malformed
        orjson.dumps(entity("Q4", None, sitelinks=[])),  # no English label; `"sitelinks": []`
        orjson.dumps({"type": "lexeme", "id": "L1", "lemmas": {}}),  # unknown type
        orjson.dumps(entity("Q5", "five", labels=[], aliases={"en": [{"language": "en", "value": "V"}]})),
        orjson.dumps(
            entity("Q6", "six", sitelinks={"enwiki": {"site": "enwiki", "title": "Six", "badges": []}})
        ),
        orjson.dumps(
            {
                "type": "property",
                "id": "P17",
                "datatype": "wikibase-item",
                "labels": {"en": {"language": "en", "value": "country"}},
                "descriptions": {},
                "aliases": {},
                "claims": {},
            }
        ),
    ]


def test_handmade_dump_bad_lines(tmp_path):
    dump = write_dump(tmp_path / "dump.json", handmade())
    stats = parse_wikidata(dump, tmp_path / "out")
    out = tmp_path / "out"
    assert [r[0] for r in rows(out, "items")] == ["Q1", "Q2", "Q4", "Q5", "Q6"]
    assert rows(out, "properties") == [("P17", "country", None, "wikibase-item")]
    assert rows(out, "claims") == [("Q1", "P31", "Q5"), ("Q2", "P17", "Q1")]
    assert rows(out, "aliases") == [("Q5", "V")]
    assert ("Q6", "Six") in rows(out, "items", "qid, enwiki_title")
    rejects = rows(out, "rejects", "position, reason, action, source, stage")
    assert rejects == [
        (4, "malformed_json", "dropped", "dump.json", "wikidata"),
        (5, "no_english_label", "kept", "dump.json", "wikidata"),
        (6, "unknown_type", "dropped", "dump.json", "wikidata"),
        (7, "no_english_label", "kept", "dump.json", "wikidata"),  # `"labels": []`
    ]
    raw = rows(out, "rejects", "raw")[0][0]
    assert raw.startswith('{"type":"item","id":"Q3"')
    assert stats["rejects_by_reason"] == {"malformed_json": 1, "no_english_label": 2, "unknown_type": 1}
    assert stats["rejects_by_action"] == {"dropped": 2, "kept": 2}
    assert (stats["deprecated_skipped"], stats["novalue_somevalue_skipped"]) == (1, 1)
    assert stats["lines"] == 10 and stats["entities"] == 6


def test_blank_lines_crlf_and_long_raw(tmp_path):
    lines = handmade()
    body = b"[\r\n" + b",\r\n".join(lines[:2]) + b",\r\n\r\n   \n" + b"{not json " + b"x" * 2000 + b"\n"
    body += b",\n".join(lines[5:]) + b"\n]"  # no final newline
    (tmp_path / "d.json").write_bytes(body)
    stats = parse_wikidata(tmp_path / "d.json", tmp_path / "out")
    assert [r[0] for r in rows(tmp_path / "out", "items")] == ["Q1", "Q2", "Q5", "Q6"]
    rejects = rows(tmp_path / "out", "rejects", "position, reason, action, length(raw)")
    assert [r[:3] for r in rejects] == [(6, "malformed_json", "dropped"), (7, "no_english_label", "kept")]
    assert rejects[0][3] == 500
    assert stats["python_fallback_chunks"] == 0


def test_gzip_input_same_as_plain(tmp_path):
    plain = parse_wikidata(write_dump(tmp_path / "d.json", handmade()), tmp_path / "plain")
    gz = parse_wikidata(write_dump(tmp_path / "d.json.gz", handmade()), tmp_path / "gz")
    assert gz["compression"] == "gz" and not gz["truncated"]
    for name in ("items", "properties", "aliases", "claims"):
        assert rows(tmp_path / "gz", name) == rows(tmp_path / "plain", name)
    assert (gz["entities"], gz["rejects"]) == (plain["entities"], plain["rejects"])


def truncated_copy(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def complete_lines_python_keeps(path: Path) -> int:
    """Entity lines that Python's own bz2/gzip module delivers whole before the damage."""
    opener = bz2.open if path.suffix == ".bz2" else gzip.open
    lines = 0
    try:
        with opener(path, "rb") as handle:
            for line in handle:
                lines += line.endswith(b"\n") and len(line.strip()) > 1
    except (EOFError, OSError):
        pass
    return lines


@pytest.mark.parametrize("suffix", [".bz2", ".gz"])
def test_truncated_input_keeps_what_came_before(tmp_path, suffix):
    lines = dump_lines(SAMPLE_DUMP)[1:1201]  # ~2.6 MB of real lines; bz2 level 1 = 100 kB blocks
    full = write_dump(tmp_path / f"full.json{suffix}", [line.rstrip(b",") for line in lines])
    cut = truncated_copy(full, tmp_path / f"cut.json{suffix}", 0.6)
    stats = parse_wikidata(cut, tmp_path / "out")
    kept = complete_lines_python_keeps(cut)
    assert stats["truncated"] and "truncated" in stats["input_error"]
    assert stats["entities"] >= kept > 200
    dropped = rows(tmp_path / "out", "rejects", "position, reason, action, raw")
    dropped = [r for r in dropped if r[2] == "dropped"]
    assert len(dropped) == 1
    position, reason, _, raw = dropped[0]
    assert reason == "truncated_input"
    assert position == stats["lines"] + 1
    qids = [r[0] for r in rows(tmp_path / "out", "items")]
    assert qids == [orjson.loads(line.rstrip(b","))["id"] for line in lines[: len(qids)]]


def test_empty_and_bracket_only_inputs(tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "brackets.json").write_bytes(b"[\n]\n")
    for name in ("empty.json", "brackets.json"):
        stats = parse_wikidata(tmp_path / name, tmp_path / name.split(".")[0])
        assert (stats["entities"], stats["rejects"]) == (0, 0)
        assert rows(tmp_path / name.split(".")[0], "items") == []


def test_missing_input(tmp_path):
    from pipelines.dump_io import InputMissing

    with pytest.raises(InputMissing):
        parse_wikidata(tmp_path / "nope.json.bz2", tmp_path / "out")
