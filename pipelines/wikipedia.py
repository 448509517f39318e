"""Stage `wikipedia`: pages-articles XML -> documents, passages, mentions, redirects (pipelines/README.md).

1. Stream the XML (iterparse, namespace-agnostic, elements cleared as we go; ns=0 pages only). Articles are
   cleaned (pipelines.wikitext), split into passages (pipelines.sentences) and written with their links'
   *unresolved* target titles to temp Parquet files; redirects are collected the same way. Memory does not
   grow with the dump: redirects may come after the articles that use them, so nothing is resolved yet.
2. Resolve in Polars joins: redirect chains are followed (cycles and chains over MAX_HOPS are rejected), then
   title -> QID through the enwiki sitelinks of items.parquet, directly or through a redirect. A document's
   qid is its title's entity (sitelink to the title, or a sitelink to a redirect that points to it).
3. Optionally add alias mentions (and NER candidates) per article (pipelines.wikipedia_link), reading the passages,
   anchors and the names of each article's entities as three streams sorted by article.
"""

from __future__ import annotations

import io
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa

from pipelines.dump_io import READ_BUFFER, InputMissing, open_recovering, require_file
from pipelines.progress import progress
from pipelines.sentences import DEFAULT_MAX_PASSAGE_CHARS, locate, make_passages
from pipelines.shards import stage_files
from pipelines.text_stage import (
    DOCUMENTS,
    MENTIONS,
    PASSAGES,
    Rejects,
    RowWriter,
    finish_stage,
    prepare_out_dir,
)
from pipelines.wikipedia_link import finish_linking, link_articles, prepare_linking
from pipelines.wikitext import clean_wikitext, link_kind, normalize_title

log = logging.getLogger(__name__)
STAGE = "wikipedia"
MAX_HOPS = 10
_REDIRECT_TEXT = re.compile(r"^\s*#REDIRECT\s*:?\s*\[\[([^\]|]+)", re.I)
_SEQ_DOCS = pa.schema([("seq", pa.int64()), ("page_id", pa.int64()), ("title", pa.string())])
_SEQ_PASSAGES = pa.schema([("seq", pa.int64()), *PASSAGES])
_LINKS = pa.schema([("seq", pa.int64()), ("page_id", pa.int64()), ("idx", pa.int32()), ("target", pa.string()),
                    ("char_start", pa.int32()), ("char_end", pa.int32())])
_REDIRECTS = pa.schema([("title", pa.string()), ("target", pa.string())])


@dataclass(slots=True)
class Page:
    title: str
    ns: int
    page_id: int | None
    redirect: str | None
    text: str


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def iter_pages(stream: object) -> Iterator[Page]:
    """Pages of a MediaWiki export of any schema version; the last revision's text. Raises ET.ParseError
    where the XML breaks off (everything before it has been yielded)."""
    context = ET.iterparse(stream, events=("start", "end"))
    _, root = next(context)
    for event, elem in context:
        if event != "end" or _local(elem.tag) != "page":
            continue
        title, ns, page_id, redirect, text = "", None, None, None, ""
        for child in elem:
            name = _local(child.tag)
            if name == "title":
                title = child.text or ""
            elif name == "ns":
                ns = int((child.text or "0").strip() or 0)
            elif name == "id" and page_id is None:
                page_id = int((child.text or "").strip()) if (child.text or "").strip().isdigit() else None
            elif name == "redirect":
                redirect = child.get("title")
            elif name == "revision":
                for part in child:
                    if _local(part.tag) == "text":
                        text = part.text or ""
        if ns is None:  # very old exports carry no <ns>: infer it from a known namespace prefix
            ns = 0 if link_kind(title) == "article" else -1
        yield Page(title, ns, page_id, redirect, text)
        root.clear()


class _Streamer:
    """Pass 1: one XML read; per-article rows to temp Parquet files."""

    def __init__(self, tmp: Path, rejects: Rejects, max_chars: int) -> None:
        self.docs = RowWriter(tmp / "docs.parquet", _SEQ_DOCS)
        self.passages = RowWriter(tmp / "passages.parquet", _SEQ_PASSAGES)
        self.links = RowWriter(tmp / "links.parquet", _LINKS)
        self.redirects = RowWriter(tmp / "redirects.parquet", _REDIRECTS)
        self.rejects = rejects
        self.max_chars = max_chars
        self.stats = {"pages": 0, "articles": 0, "redirects": 0, "redirect_pages": 0, "other_namespace_pages": 0,
                      "passages": 0, "links": 0, "links_crossing_passage": 0, "pages_with_broken_wikitext": 0}

    def close(self) -> None:
        for writer in (self.docs, self.passages, self.links, self.redirects):
            writer.close()

    def page(self, page: Page) -> None:
        self.stats["pages"] += 1
        target = page.redirect
        if target is None:
            m = _REDIRECT_TEXT.match(page.text)
            target = m.group(1) if m else None
        self.stats["redirect_pages"] += target is not None
        if page.ns != 0:
            self.stats["other_namespace_pages"] += 1
            return
        title = normalize_title(page.title)
        if target is not None:
            self.stats["redirects"] += 1
            self.redirects.add(title, normalize_title(target))
            return
        if page.page_id is None:
            self.rejects.reject(page.title, "missing_page_id", page.title, "dropped")
            return
        self.article(self.stats["articles"], page.page_id, title, page.text)
        self.stats["articles"] += 1

    def article(self, seq: int, page_id: int, title: str, wikitext: str) -> None:
        clean = clean_wikitext(wikitext)
        if clean.problems:
            self.stats["pages_with_broken_wikitext"] += 1
            for problem in clean.problems:
                self.rejects.reject(f"{page_id} {title}", "broken_wikitext", problem, "repaired")
        text = clean.text
        spans = make_passages(text, self.max_chars, [(link.start, link.end) for link in clean.links])
        self.docs.add(seq, page_id, title)
        for idx, (start, end) in enumerate(spans):
            self.passages.add(seq, page_id, idx, text[start:end], start)
        self.stats["passages"] += len(spans)
        for link in clean.links:
            self.stats["links"] += 1
            idx = locate(spans, link.start, link.end)
            if idx is None:
                self.stats["links_crossing_passage"] += 1
                self.rejects.reject(f"{page_id}:{link.start}", "link_crosses_passage",
                                    f"[[{link.target}|{link.anchor}]]", "dropped")
                continue
            base = spans[idx][0]
            self.links.add(seq, page_id, idx, link.target, link.start - base, link.end - base)


def follow_redirects(redirects: pl.DataFrame, max_hops: int = MAX_HOPS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(title, final) for every redirect whose chain ends at a non-redirect title, and (title, reason) for
    those caught in a cycle ('redirect_cycle') or a chain longer than max_hops ('redirect_chain_too_long')."""
    step = redirects.rename({"title": "cur", "target": "nxt"})
    cur = redirects.select("title", pl.col("target").alias("cur"))
    for _ in range(max_hops):
        joined = cur.join(step, on="cur", how="left")
        if joined["nxt"].null_count() == joined.height:
            break
        cur = joined.select("title", pl.coalesce("nxt", "cur").alias("cur"))
    is_redirect = pl.col("cur").is_in(redirects["title"].implode())
    done = cur.filter(~is_redirect).rename({"cur": "final"})
    stuck = cur.filter(is_redirect)["title"].to_list()
    hop = dict(zip(redirects["title"].to_list(), redirects["target"].to_list(), strict=True)) if stuck else {}
    reasons = []
    for title in stuck:
        seen, node = set(), title
        while node in hop and node not in seen:
            seen.add(node)
            node = hop[node]
        reasons.append("redirect_cycle" if node in seen else "redirect_chain_too_long")
    return done, pl.DataFrame({"title": stuck, "reason": reasons}, schema={"title": pl.String, "reason": pl.String})


def title_index(items_path: Path | list[Path], finals: pl.DataFrame) -> pl.DataFrame:
    """(title, qid, via_redirect): sitelink titles, redirect titles whose final target has an entity, and
    article titles reached by a sitelink that is itself a redirect."""
    sitelinks = (pl.scan_parquet(items_path).select(pl.col("enwiki_title").alias("title"), "qid")
                 .filter(pl.col("title").is_not_null()).collect()
                 .sort("qid").unique("title", keep="first", maintain_order=True))
    via_sitelink_redirect = (sitelinks.join(finals, on="title", how="inner")
                             .select(pl.col("final").alias("title"), "qid", pl.lit(2).alias("prio")))
    articles = (pl.concat([sitelinks.with_columns(pl.lit(0).alias("prio")), via_sitelink_redirect])
                .sort("prio", "qid").unique("title", keep="first", maintain_order=True))
    via_redirect = (finals.join(articles.select(pl.col("title").alias("final"), "qid"), on="final", how="inner")
                    .select("title", "qid", pl.lit(1).alias("prio")))
    return (pl.concat([articles, via_redirect]).sort("prio", "qid").unique("title", keep="first")
            .select("title", "qid", (pl.col("prio") > 0).alias("via_redirect")))


def _resolve(tmp: Path, items_path: list[Path], out: Path, source: str, stats: dict) -> pl.DataFrame:
    redirects = pl.read_parquet(tmp / "redirects.parquet").unique("title", keep="first", maintain_order=True)
    redirects.write_parquet(out / "redirects.parquet")
    finals, stuck = follow_redirects(redirects)
    index = title_index(items_path, finals)
    stats["redirect_cycles"] = int((stuck["reason"] == "redirect_cycle").sum())
    stats["redirect_chains_too_long"] = int((stuck["reason"] == "redirect_chain_too_long").sum())
    links = pl.scan_parquet(tmp / "links.parquet").join(index.lazy(), left_on="target", right_on="title",
                                                         how="left", maintain_order="left")
    links.filter(pl.col("qid").is_not_null()).select(
        "seq", "page_id", "idx", "qid", "char_start", "char_end", pl.lit("anchor").alias("source"),
        "via_redirect").sink_parquet(tmp / "anchors.parquet")
    unresolved = links.filter(pl.col("qid").is_null()).select(
        pl.lit(STAGE).alias("stage"), pl.lit(source).alias("source"),
        pl.format("{}:{}:{}", "page_id", "idx", "char_start").alias("position"),
        pl.lit("unresolved_link").alias("reason"), pl.col("target").str.slice(0, 500).alias("raw"),
        pl.lit("dropped").alias("action"))
    stuck_rejects = stuck.select(
        pl.lit(STAGE).alias("stage"), pl.lit(source).alias("source"), pl.col("title").alias("position"),
        "reason", pl.col("title").alias("raw"), pl.lit("dropped").alias("action"))
    pl.concat([unresolved, stuck_rejects.lazy()]).sink_parquet(tmp / "rejects_resolve.parquet")
    anchors = pl.scan_parquet(tmp / "anchors.parquet")
    counts = anchors.select(pl.len().alias("n"), pl.col("via_redirect").sum().alias("r")).collect().row(0)
    stats["links_resolved"], stats["links_via_redirect"] = int(counts[0]), int(counts[1] or 0)
    stats["links_unresolved"] = int(pl.scan_parquet(tmp / "rejects_resolve.parquet")
                                    .filter(pl.col("reason") == "unresolved_link").select(pl.len()).collect().item())
    docs = pl.scan_parquet(tmp / "docs.parquet").join(index.lazy().select("title", "qid"), on="title", how="left",
                                                      maintain_order="left")
    docs.sort("seq").sink_parquet(tmp / "docs_resolved.parquet")
    return index


def _read(reader: BinaryIO, streamer: _Streamer) -> ET.ParseError | None:
    try:
        with reader:
            for page in progress(iter_pages(reader), desc="wikipedia: pages", unit="page"):
                streamer.page(page)
    except ET.ParseError as exc:
        return exc
    return None


def _stream(xml_path: Path, streamer: _Streamer, rejects: Rejects) -> bool:
    """Pass 1 over the XML, through dump_io.open_recovering so that a damaged or truncated compressed input
    still yields every page before the damage. Returns whether the input was cut short."""
    raw = open_recovering(xml_path)
    error = _read(io.BufferedReader(raw, READ_BUFFER), streamer)
    if error is None and raw.error is None:
        return False
    reason = "truncated_input" if raw.error else "xml_parse_error"
    position = f"after page {streamer.stats['pages']}"
    rejects.reject(position, reason, raw.error or str(error), "kept")
    log.warning("%s: %s %s", xml_path.name, reason, position)
    return True


def parse_wikipedia(xml_path: str | Path, wikidata_dir: str | Path, out_dir: str | Path, *,
                    alias_linking: bool = True, ner: bool = False,
                    max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS) -> dict:
    """Run the stage; returns (and writes to stats.json) its counts. See pipelines/README.md for outputs."""
    t0 = time.perf_counter()
    xml_path = require_file(xml_path)
    wikidata_items(wikidata_dir)
    out, tmp = prepare_out_dir(out_dir)
    source = xml_path.name
    rejects = Rejects(tmp / "rejects_stream.parquet", STAGE, source)
    streamer = _Streamer(tmp, rejects, max_passage_chars)
    truncated = _stream(xml_path, streamer, rejects)
    streamer.close()
    rejects.close()
    stats: dict = dict(streamer.stats, truncated=truncated)
    return finish_wikipedia(tmp, wikidata_dir, out, source, stats, t0, alias_linking=alias_linking, ner=ner)


def wikidata_items(wikidata_dir: str | Path) -> list[Path]:
    """items.parquet of the wikidata stage (one file, or its shards' files); InputMissing when there is none."""
    items = stage_files(wikidata_dir, "items")
    if not items:
        raise InputMissing(f"input file not found: {Path(wikidata_dir) / 'items.parquet'}")
    return items


def finish_wikipedia(tmp: Path, wikidata_dir: str | Path, out: Path, source: str, stats: dict, t0: float, *,
                     alias_linking: bool = True, ner: bool = False) -> dict:
    """Passes 2 and 3 over the pass-1 files in `tmp` (docs, passages, links, redirects, rejects_stream):
    resolve links and documents, add alias/NER mentions, write the stage's files and stats."""
    link = alias_linking or ner
    resolve_wikipedia(tmp, wikidata_dir, out, source, stats, link)
    if link:
        link_articles(tmp, tmp, None, alias_linking, ner)
    return complete_wikipedia(tmp, wikidata_dir, out, stats, t0, [tmp] if link else [], ner)


def resolve_wikipedia(tmp: Path, wikidata_dir: str | Path, out: Path, source: str, stats: dict, link: bool) -> None:
    """Pass 2 (redirects, titles -> QIDs, documents) and, when linking follows, its inputs sorted by article."""
    items_path = wikidata_items(wikidata_dir)
    _resolve(tmp, items_path, out, source, stats)
    if link:
        prepare_linking(tmp, items_path, stage_files(wikidata_dir, "aliases"))


def complete_wikipedia(tmp: Path, wikidata_dir: str | Path, out: Path, stats: dict, t0: float, parts: list[Path],
                       ner: bool) -> dict:
    """The stage's files from pass 2's output and pass 3's outputs `parts` (folders, in article order)."""
    items_path = wikidata_items(wikidata_dir)
    aliases_path = stage_files(wikidata_dir, "aliases")
    extra = finish_linking(tmp, parts, items_path, aliases_path, ner, stats) if parts else []
    cols = list(MENTIONS.names)
    mentions = pl.concat([pl.scan_parquet(tmp / "anchors.parquet").select("seq", *cols)]
                         + [pl.scan_parquet(f).select("seq", *cols) for f in extra])
    mentions.sort("seq", "idx", "char_start").select(cols).sink_parquet(out / "mentions.parquet")
    pl.scan_parquet(tmp / "passages.parquet").select(PASSAGES.names).sink_parquet(out / "passages.parquet")
    docs = pl.scan_parquet(tmp / "docs_resolved.parquet").select(DOCUMENTS.names)
    docs.sink_parquet(out / "documents.parquet")
    pl.concat([pl.scan_parquet(tmp / "rejects_stream.parquet"), pl.scan_parquet(tmp / "rejects_resolve.parquet")]
              ).sink_parquet(out / "rejects.parquet")
    by_reason = pl.read_parquet(out / "rejects.parquet").group_by("reason").len().rows()
    stats.update(
        mentions_anchor=stats["links_resolved"], documents_with_qid=pl.read_parquet(
            out / "documents.parquet", columns=["qid"])["qid"].is_not_null().sum(),
        mentions=pl.scan_parquet(out / "mentions.parquet").select(pl.len()).collect().item(),
        rejects_by_reason=dict(sorted(by_reason)), seconds=round(time.perf_counter() - t0, 3))
    stats.setdefault("mentions_alias", 0)
    stats.setdefault("mentions_ner", 0)
    return finish_stage(out, tmp, stats)
