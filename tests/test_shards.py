"""Sharded ingestion without Prefect: byte ranges cover every line / page exactly once (plain, .gz, .bz2), and
1, 2 and 4 shards give the same stage outputs and the same store (row counts and table checksums)."""

from __future__ import annotations

import bz2
import gzip
import random
from pathlib import Path

import duckdb
import pytest

from kg_store import store
from pipelines.assemble import AssembleOptions, assemble
from pipelines.dump_io import TruncatedInput, open_binary
from pipelines.shards import (
    LINE_START,
    PAGE_START,
    failure_hook,
    open_shard,
    plan_shards,
    split,
    stage_files,
)
from pipelines.wikidata import parse_wikidata
from pipelines.wikidata_shards import merge_wikidata_shards, parse_wikidata_shard
from pipelines.wikipedia import parse_wikipedia
from pipelines.wikipedia_shards import merge_wikipedia_shards, parse_wikipedia_shard

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
WIKIDATA = SAMPLE / "mini-wikidata-all.json.bz2"
WIKIPEDIA = SAMPLE / "mini-enwiki-pages-articles.xml.bz2"
WIKIDATA_FILES = ("items", "properties", "aliases", "claims", "rejects")


def write(path: Path, data: bytes) -> Path:
    if path.suffix == ".bz2":
        # several streams, as pbzip2 writes them, with small blocks: shard bounds fall inside blocks
        data = b"".join(bz2.compress(data[i:i + 150_000], 1) for i in range(0, len(data), 150_000))
    elif path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def shard_bytes(path: Path, count: int, boundary=LINE_START) -> list[bytes]:
    plan = plan_shards(path, count, path.parent / f"index-{path.name}", "k")
    parts = []
    for shard in plan.shards:
        with open_shard(path, shard, plan.size, plan.index_file, boundary) as reader:
            parts.append(reader.read())
            assert reader.position == reader.length == len(parts[-1])
    return parts


def lines_blob(seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines = [b"x" * rng.choice([0, 1, 5, 80, 3000, 70_000]) + b"%d" % i for i in range(600)]
    return b"\n".join(lines) + b"\nlast line without newline"


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2"])
def test_line_shards_cover_every_line_once(tmp_path: Path, suffix: str):
    data = lines_blob()
    path = write(tmp_path / f"lines.txt{suffix}", data)
    for count in (1, 2, 3, 7, 40) + ((1000,) if not suffix else ()):  # 1000 > lines: most shards are empty
        parts = shard_bytes(path, count)
        assert len(parts) == count and b"".join(parts) == data
        offset = 0
        for part in parts:
            assert not part or offset == 0 or data[offset - 1:offset] == b"\n"  # a shard starts at a line start
            offset += len(part)


@pytest.mark.parametrize("suffix", ["", ".bz2"])
def test_page_shards_cover_every_page_once(tmp_path: Path, suffix: str):
    pages = [b"  <page>\n    <title>T%d</title>\n    <text>%s &lt;page&gt;\n</text>\n  </page>\n" % (i, b"w" * i)
             for i in range(300)]
    data = b'<mediawiki xmlns="x">\n  <siteinfo/>\n' + b"".join(pages) + b"</mediawiki>\n"
    path = write(tmp_path / f"pages.xml{suffix}", data)
    for count in (2, 5, 40):
        parts = shard_bytes(path, count, PAGE_START)
        assert b"".join(parts) == data
        assert all(part.startswith(b"  <page>\n") for part in parts[1:] if part)
        assert sum(part.count(b"<page>") for part in parts) == 300


def test_split_and_failure_hook(monkeypatch: pytest.MonkeyPatch):
    assert [(s.start, s.end) for s in split(10, 3)] == [(0, 3), (3, 6), (6, 10)]
    monkeypatch.setenv("JAKET_FAIL_SHARD", "1:1, wikipedia/2")
    with pytest.raises(RuntimeError, match="wikidata shard 1 fails on attempt 1"):
        failure_hook("wikidata", 1, 1)
    failure_hook("wikidata", 1, 2)                      # only its first attempt fails
    failure_hook("wikidata", 2, 1)
    with pytest.raises(RuntimeError, match="wikipedia shard 2"):
        failure_hook("wikipedia", 2, 5)


@pytest.mark.parametrize("suffix", [".bz2", ".gz"])
def test_damaged_input_cannot_be_planned(tmp_path: Path, suffix: str):
    """The flow then parses the file whole, through the recovering reader (truncated_input reject)."""
    full = write(tmp_path / f"d.json{suffix}", lines_blob())
    cut = tmp_path / f"cut.json{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises((RuntimeError, TruncatedInput)):
        plan_shards(cut, 2, tmp_path / "index", "k")


# --- the same outputs and store for 1, 2 and 4 shards ----------------------------------------------------------


def wikidata_sharded(dump: Path, out: Path, count: int, failed: frozenset[int] = frozenset()) -> Path:
    plan = plan_shards(dump, count, out / "_index", "k")
    finished = {s.index: parse_wikidata_shard(dump, out / s.name, plan, s) for s in plan.shards
                if s.index not in failed}
    merge_wikidata_shards(out, plan, finished, {i: "RuntimeError: test" for i in failed})
    return out


def wikipedia_sharded(xml: Path, wd: Path, out: Path, count: int) -> Path:
    plan = plan_shards(xml, count, out / "_index", "k")
    finished = {s.index: parse_wikipedia_shard(xml, out / s.name, plan, s) for s in plan.shards}
    merge_wikipedia_shards(xml, wd, out, plan, finished)
    return out


def rows(folder: Path, name: str) -> list[tuple]:
    files = ", ".join(f"'{f}'" for f in stage_files(folder, name))
    result = duckdb.sql(f"SELECT * FROM read_parquet([{files}])").fetchall()
    return [r[:2] + (str(r[2]),) + r[3:] for r in result] if name == "rejects" else result


def checksums(wd: Path, wp: Path | None, out: Path) -> dict:
    with store.atomic_store(out) as con:
        text = [("wikipedia", wp)] if wp else []
        assemble(con, wd, AssembleOptions(text_dirs=text))
        assert store.check_integrity(con) == []
        return store.table_checksums(con)


def test_sample_one_two_four_shards_identical_store(tmp_path: Path):
    """The bundled sample (.bz2 dump + XML): the one-shard stages and the sharded ones give the same store."""
    wd1, wp1 = tmp_path / "wd1", tmp_path / "wp1"
    parse_wikidata(WIKIDATA, wd1)
    parse_wikipedia(WIKIPEDIA, wd1, wp1)
    reference = checksums(wd1, wp1, tmp_path / "s1.duckdb")
    assert reference["entities"][0] == 20_000 and reference["mentions"][0] > 2_000
    for count in (2, 4):
        wd = wikidata_sharded(WIKIDATA, tmp_path / f"wd{count}", count)
        assert len(stage_files(wd, "items")) == count
        for name in WIKIDATA_FILES:
            assert rows(wd, name) == rows(wd1, name), (count, name)   # same rows in the same order
        wp = wikipedia_sharded(WIKIPEDIA, wd, tmp_path / f"wp{count}", count)
        assert checksums(wd, wp, tmp_path / f"s{count}.duckdb") == reference, count


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_small_dump_one_two_four_shards_identical(tmp_path: Path, suffix: str):
    """Plain and .gz: 1,500 real lines of the sample with a bad line, a blank line and no final newline."""
    with open_binary(WIKIDATA) as handle:
        lines = handle.read().split(b"\n")[1:1501]
    lines[1234] = b'{"type":"item","id":"Q-broken",'
    lines[1400] = b""
    dump = write(tmp_path / f"dump.json{suffix}", b"[\n" + b"\n".join(lines).rstrip(b",") + b"\n]")
    one = tmp_path / "one"
    parse_wikidata(dump, one)
    reference = checksums(one, None, tmp_path / "one.duckdb")
    assert ("1236", "malformed_json") in {(r[2], r[3]) for r in rows(one, "rejects")}
    for count in (2, 4):
        wd = wikidata_sharded(dump, tmp_path / f"n{count}", count)
        for name in WIKIDATA_FILES:
            assert rows(wd, name) == rows(one, name), (count, name)
        assert checksums(wd, None, tmp_path / f"n{count}.duckdb") == reference


def test_failed_shard_is_a_reject_with_its_byte_range(tmp_path: Path):
    """A shard left out keeps the line numbers of the shards after it exact (its lines are counted)."""
    with open_binary(WIKIDATA) as handle:
        data = b"\n".join(handle.read().split(b"\n")[:1501]) + b"\n]\n"
    dump = write(tmp_path / "dump.json", data)
    one = tmp_path / "one"
    parse_wikidata(dump, one)
    wd = wikidata_sharded(dump, tmp_path / "three", 3, failed=frozenset({1}))
    plan = plan_shards(dump, 3, tmp_path / "idx", "k")
    got = rows(wd, "rejects")
    failed = [r for r in got if r[3] == "shard_failed"]
    shard = plan.shards[1]
    assert failed == [("wikidata", "dump.json", f"bytes {shard.start}-{shard.end}", "shard_failed",
                       f"shard 1 of 3, bytes [{shard.start:,}, {shard.end:,}): RuntimeError: test", "dropped")]
    with open_shard(dump, shard, plan.size, None) as reader:
        first, last = data[: reader.begin].count(b"\n") + 1, data[: reader.stop].count(b"\n")
    expected = [r for r in rows(one, "rejects") if not first <= int(r[2]) <= last]
    others = [r for r in got if r[3] != "shard_failed"]
    assert others == expected and int(others[-1][2]) > last     # shard 2's rejects keep their line numbers
    assert len(rows(wd, "items")) == len(rows(one, "items")) - (last - first + 1)
