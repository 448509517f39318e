"""The `wikipedia` stage in shards: pass 1 (XML -> cleaned articles, passages, links, redirects) runs per byte
range of the XML, split on `<page>` lines; the merge concatenates the shards' pass-1 files in order (article
sequence numbers shifted by the articles of the shards before), runs pass 2 (redirects, title -> QID) once and
pass 3 (alias/NER mentions, per article) in article ranges, one per shard, that the flow runs in parallel:
`prepare_wikipedia_merge`, `link_wikipedia_range` (each range), `complete_wikipedia_merge`. The result equals
the one-shard stage's.

Each shard reads its range wrapped in the dump's own root element (`<mediawiki xmlns=...>`), so the
namespace-agnostic page reader sees a complete document.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipelines.dump_io import READ_BUFFER
from pipelines.sentences import DEFAULT_MAX_PASSAGE_CHARS
from pipelines.shards import (
    PAGE_START,
    Shard,
    ShardPlan,
    failure_hook,
    open_seekable,
    open_shard,
    peak_rss_mib,
)
from pipelines.text_stage import REJECTS, Rejects, prepare_out_dir
from pipelines.wikipedia import STAGE, _read, _Streamer, complete_wikipedia, resolve_wikipedia, wikidata_items
from pipelines.wikipedia_link import link_articles

PASS1 = ("docs", "passages", "links", "redirects", "rejects_stream")
_ROOT = re.compile(rb"<mediawiki\b[^>]*>")


def root_tag(path: str | os.PathLike, index_file: str | None) -> bytes:
    """The dump's opening root element (with its namespace declarations)."""
    with open_seekable(path, index_file) as stream:
        head = stream.read(1 << 16)
    match = _ROOT.search(head)
    return (match.group(0) if match else b"<mediawiki>") + b"\n"


def parse_wikipedia_shard(xml: str | os.PathLike, out_dir: str | os.PathLike, plan: ShardPlan, shard: Shard, *,
                          max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS, attempt: int = 1) -> dict:
    """Pass 1 of one shard into `out_dir`: docs/passages/links/redirects/rejects_stream.parquet + stats.json.
    Sequence numbers count the shard's own articles from 0."""
    failure_hook(STAGE, shard.index, attempt)
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader = open_shard(xml, shard, plan.size, plan.index_file, PAGE_START,
                        prefix=root_tag(xml, plan.index_file), suffix=b"</mediawiki>\n")
    rejects = Rejects(out / "rejects_stream.parquet", STAGE, Path(xml).name)
    streamer = _Streamer(out, rejects, max_passage_chars)
    error = None
    if reader.length:
        error = _read(io.BufferedReader(reader, READ_BUFFER), streamer)
    else:
        reader.close()
    streamer.close()
    rejects.close()
    stats = dict(streamer.stats, shard=shard.as_dict(), begin=reader.begin, stop=reader.stop,
                 decompressed_bytes=reader.position, read_seconds=round(reader.read_seconds, 3),
                 xml_error=None if error is None else str(error), peak_rss_mib=peak_rss_mib(), pid=os.getpid(),
                 wall_seconds=round(time.perf_counter() - t0, 3), cpu_seconds=round(time.process_time() - cpu0, 3))
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats


def prepare_wikipedia_merge(xml: str | os.PathLike, wikidata_dir: str | os.PathLike, stage_dir: str | os.PathLike,
                            plan: ShardPlan, finished: dict[int, dict], failed: dict[int, str] | None = None, *,
                            link: bool = True) -> tuple[dict, list[tuple[int, int]]]:
    """Pass 2 over the finished shards' pass-1 files (concatenated in order, article numbers shifted) and the
    inputs of pass 3; returns the stats so far and the article ranges (one per finished shard) to link. A
    failed shard (index -> error) is left out and reported as a `shard_failed` reject with its byte range."""
    started = time.time()
    wikidata_items(wikidata_dir)
    out, tmp = prepare_out_dir(stage_dir)
    source = Path(xml).name
    counters = ("pages", "articles", "redirects", "redirect_pages", "other_namespace_pages", "passages", "links",
                "links_crossing_passage", "pages_with_broken_wikitext")
    stats: dict = dict.fromkeys(counters, 0)
    frames: dict[str, list[pl.LazyFrame]] = {name: [] for name in PASS1}
    parse_errors, failed, ranges = [], failed or {}, []
    for shard in plan.shards:
        if shard.index in failed:
            parse_errors.append((f"bytes {shard.start}-{shard.end}", "shard_failed",
                                 f"{shard.describe()}: {failed[shard.index]}"))
            continue
        shard_stats, folder = finished[shard.index], out / shard.name
        for name in PASS1:
            frame = pl.scan_parquet(folder / f"{name}.parquet")
            if name in ("docs", "passages", "links"):
                frame = frame.with_columns(pl.col("seq") + stats["articles"])
            frames[name].append(frame)
        if shard_stats.get("xml_error"):
            parse_errors.append((f"after page {stats['pages'] + shard_stats['pages']}", "xml_parse_error",
                                 shard_stats["xml_error"]))
        ranges.append((stats["articles"], stats["articles"] + int(shard_stats["articles"])))
        for key in counters:
            stats[key] += int(shard_stats.get(key) or 0)
    if not ranges:
        raise RuntimeError(f"{STAGE}: every shard failed; nothing to merge")
    for name, parts in frames.items():
        pl.concat(parts).sink_parquet(tmp / f"{name}.parquet")
    if parse_errors:  # an XML error ends its shard only; the shards after it are read
        extra = Rejects(tmp / "rejects_xml.parquet", STAGE, source)
        for position, reason, message in parse_errors:
            extra.reject(position, reason, message, "dropped" if reason == "shard_failed" else "kept")
        extra.close()
        merged = pl.concat([pl.scan_parquet(tmp / "rejects_stream.parquet"),
                            pl.scan_parquet(tmp / "rejects_xml.parquet")]).collect()
        merged.write_parquet(tmp / "rejects_stream.parquet")
    assert pq.read_schema(tmp / "rejects_stream.parquet").names == REJECTS.names
    stats.update(truncated=any(reason == "xml_parse_error" for _, reason, _ in parse_errors),
                 shards=len(plan.shards), shards_failed={str(i): failed[i] for i in sorted(failed)},
                 shard_seconds_max=max((s.get("wall_seconds") or 0 for s in finished.values()), default=0),
                 peak_rss_mib_max=max((s.get("peak_rss_mib") or 0 for s in finished.values()), default=0))
    resolve_wikipedia(tmp, wikidata_dir, out, source, stats, link)
    stats["merge_started"] = started
    return stats, ranges


def link_wikipedia_range(stage_dir: str | os.PathLike, part: int, seq_range: tuple[int, int], alias_linking: bool,
                         ner: bool) -> dict[str, int]:
    """Pass 3 over one article range (after prepare_wikipedia_merge), into `_tmp/link-NNNN/`."""
    tmp = Path(stage_dir) / "_tmp"
    return link_articles(tmp, tmp / f"link-{part:04d}", seq_range, alias_linking, ner)


def complete_wikipedia_merge(wikidata_dir: str | os.PathLike, stage_dir: str | os.PathLike, stats: dict,
                             parts: int, ner: bool) -> dict:
    """The stage's files from pass 2 and the `parts` linked ranges (0 when there was no linking)."""
    tmp = Path(stage_dir) / "_tmp"
    t0 = time.perf_counter() - (time.time() - stats.pop("merge_started", time.time()))
    return complete_wikipedia(tmp, wikidata_dir, Path(stage_dir), stats, t0,
                              [tmp / f"link-{i:04d}" for i in range(parts)], ner)


def merge_wikipedia_shards(xml: str | os.PathLike, wikidata_dir: str | os.PathLike, stage_dir: str | os.PathLike,
                           plan: ShardPlan, finished: dict[int, dict], failed: dict[int, str] | None = None, *,
                           alias_linking: bool = True, ner: bool = False) -> dict:
    """Passes 2 and 3 over the finished shards' pass-1 files, in this process (the flow runs the article
    ranges of pass 3 as parallel tasks); writes the stage's files."""
    link = alias_linking or ner
    stats, ranges = prepare_wikipedia_merge(xml, wikidata_dir, stage_dir, plan, finished, failed, link=link)
    for part, seq_range in enumerate(ranges if link else []):
        link_wikipedia_range(stage_dir, part, seq_range, alias_linking, ner)
    return complete_wikipedia_merge(wikidata_dir, stage_dir, stats, len(ranges) if link else 0, ner)
