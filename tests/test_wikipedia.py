"""Stage `wikipedia` on the miniwiki sample (counts, expected.json examples, every link against
provenance.json.gz), hand-made broken XML, a truncated .bz2, the real enwiki excerpt, and NER candidates."""

from __future__ import annotations

import bz2
import gzip
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import polars as pl
import pytest

from pipelines.wikipedia import follow_redirects, parse_wikipedia
from pipelines.wikitext import clean_wikitext

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
XML = SAMPLE / "mini-enwiki-pages-articles.xml.bz2"
EXPECTED = json.loads((SAMPLE / "expected.json").read_text())
PROVENANCE = json.loads(gzip.decompress((SAMPLE / "provenance.json.gz").read_bytes()))
ENWIKI = "wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _wikidata_by_hand(dump: Path, out: Path) -> None:
    """items/aliases.parquet straight from the JSON dump (used until pipelines.wikidata exists)."""
    items, aliases = [], []
    with bz2.open(dump, "rb") as handle:
        for line in handle:
            line = line.strip().rstrip(b",")
            if line in (b"", b"[", b"]"):
                continue
            entity = orjson.loads(line)
            if entity.get("type") != "item":
                continue
            en = {k: (entity.get(k) or {}).get("en", {}) for k in ("labels", "descriptions")}
            title = (entity.get("sitelinks") or {}).get("enwiki", {}).get("title")
            items.append((entity["id"], en["labels"].get("value"), en["descriptions"].get("value"), title))
            aliases += [(entity["id"], a["value"]) for a in (entity.get("aliases") or {}).get("en", [])]
    pl.DataFrame(items, schema=["qid", "label", "description", "enwiki_title"], orient="row").write_parquet(
        out / "items.parquet")
    pl.DataFrame(aliases, schema=["qid", "alias"], orient="row").write_parquet(out / "aliases.parquet")


@pytest.fixture(scope="session")
def mini_wikidata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wikidata")
    try:
        from pipelines.wikidata import parse_wikidata
    except ImportError:
        _wikidata_by_hand(SAMPLE / "mini-wikidata-all.json.bz2", out)
    else:
        parse_wikidata(SAMPLE / "mini-wikidata-all.json.bz2", out)
    return out


@pytest.fixture(scope="module")
def mini(mini_wikidata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("wikipedia")
    stats = parse_wikipedia(XML, mini_wikidata, out)
    return {"stats": stats, "out": out, **_tables(out)}


def _tables(out: Path) -> dict:
    tables = {name: pl.read_parquet(out / f"{name}.parquet")
              for name in ("documents", "passages", "mentions", "redirects", "rejects")}
    tables["joined"] = tables["mentions"].join(tables["passages"], on=["page_id", "idx"], how="left")
    tables["joined"] = tables["joined"].with_columns(surface=pl.struct("text", "char_start", "char_end").map_elements(
        lambda r: r["text"][r["char_start"]:r["char_end"]] if r["text"] is not None else None,
        return_dtype=pl.String))
    return tables


def test_miniwiki_counts(mini: dict):
    stats, counts = mini["stats"], EXPECTED["counts"]
    assert stats["articles"] == counts["articles"] == mini["documents"].height
    assert stats["redirects"] == counts["redirects"] == mini["redirects"].height
    assert stats["links"] == stats["links_resolved"] == counts["linked_mentions"]
    assert stats["links_via_redirect"] == counts["linked_mentions_via_redirect"]
    assert stats["links_unresolved"] == 0 and stats["links_crossing_passage"] == 0
    assert mini["rejects"].height == 0
    anchors = mini["mentions"].filter(pl.col("source") == "anchor")
    assert anchors.height == counts["linked_mentions"]
    assert anchors["qid"].n_unique() == counts["linked_mentions_distinct_qids"]
    assert mini["documents"]["qid"].is_not_null().sum() == counts["articles_with_subject_item"]
    assert set(mini["redirects"].rows()) == {(r["title"], r["target"]) for r in EXPECTED["redirects"]}
    assert (out := mini["out"]) and (out / "stats.json").is_file() and not (out / "_tmp").exists()


def test_documents_subjects(mini: dict):
    docs = {row[0]: row for row in mini["documents"].rows()}
    for article in EXPECTED["articles"]:
        page_id, title, qid = docs[article["page_id"]]
        assert (title, qid) == (article["title"], article["subject_qid"])


def test_expected_examples(mini: dict):
    joined = mini["joined"]
    for ex in EXPECTED["examples"]:
        m = ex["mention"]
        rows = joined.filter((pl.col("page_id") == ex["page_id"]) & (pl.col("source") == "anchor")
                             & (pl.col("char_start") + pl.col("doc_start") == m["start"]))
        assert rows.height == 1, ex["article_title"]
        row = rows.row(0, named=True)
        assert (row["surface"], row["qid"]) == (m["anchor"], m["qid"])
        assert row["doc_start"] + row["char_end"] == m["end"]
    louis = joined.filter((pl.col("page_id") == 2779825) & (pl.col("qid") == "Q2973")
                          & (pl.col("source") == "anchor")).row(0, named=True)
    assert louis["text"][louis["char_start"]:louis["char_end"]] == "Darmstadt"
    assert (louis["doc_start"] + louis["char_start"], louis["doc_start"] + louis["char_end"]) == (246, 255)


def test_redirected_links_resolve(mini: dict):
    anchors = mini["joined"].filter(pl.col("source") == "anchor")
    assert set(anchors.filter(pl.col("surface") == "U.S.")["qid"]) == {"Q30"}
    assert set(anchors.filter(pl.col("surface") == "Second World War")["qid"]) == {"Q362"}


def test_every_anchor_matches_provenance(mini: dict):
    """All 1,658 links: same document offsets, surface and QID as the hand annotations."""
    anchors = mini["joined"].filter(pl.col("source") == "anchor").with_columns(
        start=pl.col("doc_start") + pl.col("char_start"), end=pl.col("doc_start") + pl.col("char_end"))
    got = set(anchors.select("page_id", "start", "end", "surface", "qid").rows())
    want = {(a["page_id"], link["start"], link["end"], link["anchor"], link["qid"])
            for a in PROVENANCE["articles"] for link in a["links"]}
    assert got == want


def test_spans_and_overlaps(mini: dict, mini_wikidata: Path):
    joined = mini["joined"]
    assert joined["text"].null_count() == 0
    assert (joined["surface"].str.len_chars() > 0).all()
    assert (joined["char_end"] <= joined["text"].str.len_chars()).all()
    names = pl.concat([pl.read_parquet(mini_wikidata / "items.parquet").select("qid", name="label"),
                       pl.read_parquet(mini_wikidata / "aliases.parquet").select("qid", name="alias")])
    known = {(q, n) for q, n in names.drop_nulls().rows()} | {(q, n[:1].upper() + n[1:]) for q, n in
                                                              names.drop_nulls().rows()}
    alias = joined.filter(pl.col("source") == "alias")
    assert alias.height > 0
    assert all((q, s) in known for q, s in alias.select("qid", "surface").rows())
    for _, group in joined.group_by("page_id", "idx"):
        spans = sorted(group.select("char_start", "char_end").rows())
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), "mentions overlap"


def test_plain_text_is_the_readme_definition():
    """Plain text == README definition, except the leftover tags this cleaner removes (<br> -> newline)."""
    link = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\]]*))?\]\]")
    root = ET.fromstring(bz2.decompress(XML.read_bytes()))
    differing = []
    for page in root.iter("{http://www.mediawiki.org/xml/export-0.10/}page"):
        text = next(t.text for t in page.iter() if t.tag.endswith("}text"))
        if text.startswith("#REDIRECT"):
            continue
        definition = link.sub(lambda m: m.group(2) if m.group(2) is not None else m.group(1), text)
        plain = clean_wikitext(text).text
        if plain != definition:
            differing.append(page.find("{http://www.mediawiki.org/xml/export-0.10/}title").text)
            assert plain == re.sub(r"</?(nowiki|onlyinclude)>", "", definition.replace("<br>", "\n"))
    assert len(differing) == 4


def _page(title: str, text: str, page_id: int, ns: int = 0, redirect: str | None = None) -> str:
    red = f'<redirect title="{redirect}" />' if redirect else ""
    return (f"<page><title>{title}</title><ns>{ns}</ns><id>{page_id}</id>{red}<revision><id>1</id>"
            f"<text xml:space=\"preserve\">{text}</text></revision></page>")


@pytest.fixture()
def tiny_wikidata(tmp_path: Path) -> Path:
    wd = tmp_path / "wd"
    wd.mkdir()
    pl.DataFrame({"qid": ["Q1", "Q2", "Q3", "Q4"], "label": ["Alpha", "Beta city", "Gamma", "Paris"],
                  "description": [None] * 4, "enwiki_title": ["Alpha", "Beta", "Gamma", "Paris"]}).write_parquet(
        wd / "items.parquet")
    pl.DataFrame({"qid": ["Q2", "Q2"], "alias": ["Bêta", "in"]}).write_parquet(wd / "aliases.parquet")
    return wd


def test_broken_page_and_redirects(tmp_path: Path, tiny_wikidata: Path):
    pages = [
        _page("Alpha", "'''Alpha''' is near [[Beta|the city]]. Beta city and Bêta are fine. Gamma too.", 1),
        _page("Broken", "Good start [[Gamma]]. {{Infobox | broken [[Alpha]]\n\nLater [[Beta]] and [[Nowhere]]."
              " [[Loop A]] [[B2]]", 2),
        _page("Talk:Alpha", "talk", 3, ns=1),
        _page("B2", "#REDIRECT [[Beta]]", 4, redirect="Beta"),
        _page("Loop A", "#REDIRECT [[Loop B]]", 5, redirect="Loop B"),
        _page("Loop B", "#REDIRECT [[Loop A]]", 6, redirect="Loop A"),
    ]
    xml = tmp_path / "pages.xml"
    xml.write_text('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">'
                   + "".join(pages) + "</mediawiki>")
    stats = parse_wikipedia(xml, tiny_wikidata, tmp_path / "out")
    t = _tables(tmp_path / "out")
    assert stats["articles"] == 2 and stats["redirects"] == 3 and stats["other_namespace_pages"] == 1
    reasons = dict(t["rejects"].group_by("reason").len().rows())
    assert reasons == {"broken_wikitext": 1, "unresolved_link": 2, "redirect_cycle": 2}
    assert set(t["rejects"].filter(pl.col("reason") == "broken_wikitext")["action"]) == {"repaired"}
    assert set(t["rejects"].filter(pl.col("reason") == "unresolved_link")["raw"]) == {"Nowhere", "Loop A"}
    anchors = t["joined"].filter(pl.col("source") == "anchor")
    assert sorted(anchors.select("surface", "qid").rows()) == [
        ("B2", "Q2"), ("Beta", "Q2"), ("Gamma", "Q3"), ("the city", "Q2")]
    alias = t["joined"].filter(pl.col("source") == "alias")
    # Alpha's article: its own entity (Alpha) and Beta by label and alias; "in" is a stop word, never matched
    assert sorted(alias.filter(pl.col("page_id") == 1).select("surface", "qid").rows()) == [
        ("Alpha", "Q1"), ("Beta city", "Q2"), ("Bêta", "Q2")]
    assert "Later" in " ".join(t["passages"]["text"]) and "Infobox" not in " ".join(t["passages"]["text"])
    assert dict(t["documents"].select("title", "qid").rows()) == {"Alpha": "Q1", "Broken": None}


def test_follow_redirects_chains_and_cycles():
    redirects = pl.DataFrame({"title": ["A", "B", "C", "X", "Y", "S"], "target": ["B", "C", "D", "Y", "X", "S"]})
    done, stuck = follow_redirects(redirects)
    assert dict(done.rows()) == {"A": "D", "B": "D", "C": "D"}
    assert dict(stuck.rows()) == {"X": "redirect_cycle", "Y": "redirect_cycle", "S": "redirect_cycle"}
    _, stuck = follow_redirects(redirects.filter(pl.col("title").is_in(["A", "B", "C"])), max_hops=1)
    assert dict(stuck.rows()) == {"A": "redirect_chain_too_long"}


@pytest.mark.parametrize("kind", ["bz2", "gz"])
def test_truncated_input_keeps_what_was_read(tmp_path: Path, mini_wikidata: Path, kind: str):
    xml = bz2.decompress(XML.read_bytes())
    data = bz2.compress(xml, compresslevel=1) if kind == "bz2" else gzip.compress(xml)  # bz2: 4 blocks
    cut = tmp_path / f"cut.xml.{kind}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    stats = parse_wikipedia(cut, mini_wikidata, tmp_path / "out", alias_linking=False)
    assert stats["truncated"] is True
    assert 0 < stats["articles"] < EXPECTED["counts"]["articles"]
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert rejects.filter(pl.col("reason") == "truncated_input").height == 1
    docs = pl.read_parquet(tmp_path / "out" / "documents.parquet")
    assert docs.height == stats["articles"]


def test_real_enwiki_excerpt(shared_data: Path, mini_wikidata: Path, tmp_path: Path):
    stats = parse_wikipedia(shared_data / ENWIKI, mini_wikidata, tmp_path / "out")
    assert stats["articles"] == 106 and stats["redirect_pages"] == 100 and stats["redirects"] == 99
    assert stats["links"] > 20_000
    assert stats["links_unresolved"] > stats["links_resolved"] > 0
    t = _tables(tmp_path / "out")
    assert t["rejects"].filter(pl.col("reason") == "unresolved_link").height == stats["links_unresolved"]
    assert t["documents"].height == 106 and t["passages"].height == stats["passages"]
    assert (t["joined"]["surface"].str.len_chars() > 0).all()
    text = " ".join(t["passages"]["text"])
    for junk in ("{{", "}}", "[[", "]]", "<ref", "{|", "'''", "thumb|"):
        assert junk not in text, junk
    anarchism = t["passages"].filter(pl.col("page_id") == 12)["text"][0]
    assert anarchism.startswith("Anarchism is a political philosophy")


def test_ner_candidates(tmp_path: Path, tiny_wikidata: Path):
    xml = tmp_path / "ner.xml"
    xml.write_text("<mediawiki>" + _page("Alpha", "Alpha met [[Gamma]] in Paris last year. Paris is big.", 1)
                   + "</mediawiki>")
    stats = parse_wikipedia(xml, tiny_wikidata, tmp_path / "out", ner=True)
    t = _tables(tmp_path / "out")
    ner = t["joined"].filter(pl.col("source") == "ner")
    assert stats["mentions_ner"] == ner.height
    assert set(ner["surface"]) <= {"Paris", "Alpha"} and set(ner["qid"]) <= {"Q4", "Q1"}
    assert "Paris" in set(ner["surface"])


def test_link_longer_than_a_passage_is_rejected(tmp_path: Path, tiny_wikidata: Path):
    xml = tmp_path / "long.xml"
    long_anchor = "averyveryverylonganchorwithoutanyspaceinside"
    xml.write_text("<mediawiki>" + _page("Gamma", f"Short [[Alpha]] one. Then [[Alpha|{long_anchor}]] ends.", 1)
                   + "</mediawiki>")
    stats = parse_wikipedia(xml, tiny_wikidata, tmp_path / "out", max_passage_chars=30, alias_linking=False)
    t = _tables(tmp_path / "out")
    assert stats["links_crossing_passage"] == 1 and stats["links_resolved"] == 1
    assert t["rejects"].filter(pl.col("reason") == "link_crosses_passage")["action"].to_list() == ["dropped"]
    assert t["joined"]["surface"].to_list() == ["Alpha"]
    assert (t["passages"]["text"].str.len_chars() <= 30).all()
