"""Stage `wikidata`: a Wikidata JSON dump -> items, properties, aliases, claims, rejects (Parquet) + stats.json.

Streaming, constant memory: a background thread decompresses (in parallel where possible) and cuts the dump
into line-aligned chunks edited to NDJSON (`wikidata_chunks`); DuckDB's JSON reader parses each chunk with
explicitly typed columns (`wikidata_sql`). Lines the reader cannot take are re-read with orjson, which gives
the reject reason or, for valid entities, the same rows (`wikidata_python`). See pipelines/README.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from io import RawIOBase
from pathlib import Path

import duckdb

from pipelines import wikidata_sql as sql
from pipelines.dump_io import RecoveringReader, compression_of, open_recovering, require_file
from pipelines.progress import progress
from pipelines.wikidata_chunks import Chunk, DamagedTail, Prefetch, iter_chunks
from pipelines.wikidata_out import ParquetOutputs
from pipelines.wikidata_python import Entity, classify, extract

STAGE = "wikidata"
# DuckDB's NDJSON reader hands out 16 MiB buffers of a file to its threads (longer lines still parse): a chunk
# of 16 MiB per parsing thread keeps them all busy; a larger maximum_object_size would mean fewer buffers.
BYTES_PER_THREAD = 16 << 20
MAX_OBJECT_BYTES = 16 << 20
RAW_CHARS = 500
log = logging.getLogger(__name__)


def parse_wikidata(
    dump_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    threads: int | None = None,
    chunk_bytes: int | None = None,
) -> dict:
    """Parse a Wikidata JSON dump (plain/.gz/.bz2; array layout or one entity per line) into `out_dir`.

    Writes items/properties/aliases/claims/rejects.parquet and stats.json (not `_SUCCESS`); returns the stats.
    """
    path = require_file(dump_path)
    threads = max(1, threads or os.cpu_count() or 1)
    compressed = compression_of(path) != "plain"
    # compressed input: decompression and parsing share the cores (2 cores: one each, as a pipeline)
    decompress_threads = max(1, threads // 2) if compressed else 1
    reader = open_recovering(path, decompress_threads)
    return parse_reader(reader, path.name, compression_of(path), out_dir, threads=threads,
                        decompress_threads=decompress_threads if compressed else 0, chunk_bytes=chunk_bytes,
                        total=_input_total(reader), label=f"wikidata {path.name}")


def parse_reader(
    reader: RawIOBase,
    source: str,
    compression: str,
    out_dir: str | os.PathLike,
    *,
    threads: int,
    decompress_threads: int,
    chunk_bytes: int | None = None,
    total: Callable[[], tuple[int, int | None]] | None = None,
    label: str = "wikidata",
    on_chunk: Callable[[int, int], None] | None = None,
) -> dict:
    """The stage over an open reader of decompressed dump bytes (`error`/`position` as dump_io's recovering
    reader); closes it. `total()` gives (bytes done, bytes expected) for the progress line; `on_chunk(bytes,
    entities)` is called after each chunk with the running totals."""
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parse_threads = max(1, threads - decompress_threads) if decompress_threads else threads
    chunk_bytes = chunk_bytes or BYTES_PER_THREAD * parse_threads
    total = total or (lambda: (getattr(reader, "position", 0), None))
    parse_seconds = 0.0
    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(contextlib.closing(reader))
        scratch = Path(tempfile.mkdtemp(prefix="wikidata-", dir=_scratch_root(out)))
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        run = _Run(source, ParquetOutputs(out))
        cleanup.callback(run.outputs.close)
        config = {"threads": parse_threads, "preserve_insertion_order": True, "temp_directory": str(scratch)}
        con = cleanup.enter_context(duckdb.connect(config=config))
        bar = cleanup.enter_context(progress(total=total()[1], desc=label, unit="B", unit_scale=True))
        chunks = Prefetch(
            _written(iter_chunks(reader, chunk_bytes, lambda: reader.error is not None), scratch)
        )
        cleanup.callback(chunks.close)  # first to run: stop reading before the reader closes
        for chunk in chunks:
            if isinstance(chunk, DamagedTail):
                run.damaged(chunk.line_number, chunk.raw, reader.error)
            else:
                t0 = time.perf_counter()
                run.chunk(con, chunk)
                parse_seconds += time.perf_counter() - t0
                os.remove(chunk.path)  # type: ignore[arg-type]
            del chunk  # release the buffer while waiting for the next one
            done = total()[0]
            bar.update(done - bar.n)
            entities = run.counts["items"] + run.counts["properties"]
            bar.set_postfix(entities=f"{entities:,}")
            if on_chunk is not None:
                on_chunk(done, entities)
        if reader.error and not run.truncation_recorded:
            run.damaged(run.lines + 1, b"", reader.error)
    stats = run.stats(compression, threads, reader, time.perf_counter() - started)
    stats["cpu_seconds"] = round(_cpu_seconds() - cpu_started, 3)  # all threads of this process
    stats["parse_threads"], stats["decompress_threads"] = parse_threads, decompress_threads
    stats["parse_seconds"] = round(parse_seconds, 3)
    if hasattr(reader, "read_seconds"):
        stats["read_seconds"] = round(reader.read_seconds, 3)
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats


def _input_total(reader: RecoveringReader) -> Callable[[], tuple[int, int | None]]:
    """Progress of a whole-file read: compressed bytes consumed of the file size (the decompressed size of a
    compressed file is unknown until the end), or decompressed bytes of a plain file."""
    size = reader.path.stat().st_size

    def done() -> tuple[int, int | None]:
        if reader.kind == "plain":
            return reader.position, size
        try:
            return min(size, int(reader.inner.tell_compressed()) // 8), size  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the recovering tail has no compressed position
            return size, size

    return done


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _scratch_root(out: Path) -> str:
    """Chunk files live in RAM (/dev/shm) when possible: they are written once and read once."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
        return str(shm)
    return str(out)


def _written(chunks: Iterator[Chunk | DamagedTail], scratch: Path) -> Iterator[Chunk | DamagedTail]:
    """Write each chunk where DuckDB can read it (in the background thread, next to decompression)."""
    for number, chunk in enumerate(chunks):
        if isinstance(chunk, Chunk):
            chunk.path = str(scratch / f"chunk-{number:06d}.ndjson")
            with open(chunk.path, "wb") as handle:
                handle.write(memoryview(chunk.buf))
        yield chunk


class _Run:
    """Counters, rejects and the rows of the Python path, for one dump."""

    def __init__(self, source: str, outputs: ParquetOutputs) -> None:
        self.source = source
        self.outputs = outputs
        self.counts: Counter = Counter()
        self.reasons: Counter = Counter()
        self.actions: Counter = Counter()
        self.lines = 0
        self.truncation_recorded = False
        self.error: str | None = None
        self._rejects: list[tuple] = []
        self._rows: dict[str, list[tuple]] = {"items": [], "properties": [], "aliases": [], "claims": []}

    # --- one chunk -----------------------------------------------------------------------------------------
    def chunk(self, con: duckdb.DuckDBPyConnection, chunk: Chunk) -> None:
        self.lines += chunk.n_lines
        self.counts["layout_lines"] += chunk.layout_lines
        try:
            con.execute(sql.load_chunk(chunk.path, MAX_OBJECT_BYTES))  # type: ignore[arg-type]
            result = con.sql(sql.COUNTS)
            counts = dict(zip(result.columns, result.fetchall()[0], strict=True))
        except duckdb.Error as exc:  # the reader gave up on the whole chunk: take it line by line
            log.warning("%s: chunk at line %d re-read in Python: %s", self.source, chunk.first_line, exc)
            counts = None
        if counts is None or counts.pop("n_rows") != len(chunk.row_lines):
            self._python_chunk(chunk)
        else:
            for name, query in (
                ("items", sql.ITEMS),
                ("properties", sql.PROPERTIES),
                ("aliases", sql.ALIASES),
                ("claims", sql.CLAIMS),
            ):
                self.outputs.write(name, con.sql(query).to_arrow_table())
            self.counts.update({k: int(v) for k, v in counts.items()})
            rows = chunk.row_lines
            for rowid, valid in con.sql(sql.ATTENTION).fetchall():
                index = int(rows[rowid])
                if valid:
                    self.reject(chunk.first_line + index, "no_english_label", chunk.line(index), "kept")
                else:
                    self._python_line(chunk.first_line + index, chunk.line(index))
        self._flush()

    def _python_chunk(self, chunk: Chunk) -> None:
        self.counts["python_fallback_chunks"] += 1
        for index in chunk.row_lines.tolist():
            self._python_line(chunk.first_line + index, chunk.line(index))

    def _python_line(self, line_number: int, raw: bytes) -> None:
        obj, reason = classify(raw)
        if reason is not None:
            self.reject(line_number, reason, raw, "dropped")
            return
        self.counts["python_fallback_lines"] += 1
        self._add(extract(obj), line_number, raw)  # type: ignore[arg-type]

    def _add(self, entity: Entity, line_number: int, raw: bytes) -> None:
        c = self.counts
        if entity.kind == "item":
            self._rows["items"].append((entity.id, entity.label, entity.description, entity.extra))
            self._rows["claims"].extend(entity.triples)
            c["items"] += 1
            c["items_with_en_label"] += entity.label is not None
            c["items_with_en_description"] += entity.description is not None
            c["items_with_en_aliases"] += bool(entity.aliases)
            c["items_with_enwiki"] += entity.extra is not None
            c["claims"] += len(entity.triples)
            c["deprecated_skipped"] += entity.n_deprecated
            c["novalue_somevalue_skipped"] += entity.n_nonvalue
        else:
            self._rows["properties"].append((entity.id, entity.label, entity.description, entity.extra))
            c["properties"] += 1
        self._rows["aliases"].extend((entity.id, alias) for alias in entity.aliases)
        c["aliases"] += len(entity.aliases)
        if entity.label is None:
            self.reject(line_number, "no_english_label", raw, "kept")

    # --- rejects -------------------------------------------------------------------------------------------
    def reject(self, line_number: int, reason: str, raw: bytes, action: str) -> None:
        text = raw[: RAW_CHARS * 4].decode("utf-8", "replace")[:RAW_CHARS]
        self._rejects.append((STAGE, self.source, line_number, reason, text, action))
        self.reasons[reason] += 1
        self.actions[action] += 1

    def damaged(self, line_number: int, raw: bytes, error: str | None) -> None:
        self.error = error
        self.truncation_recorded = True
        self.reject(line_number, "truncated_input", raw, "dropped")
        self._flush()

    def _flush(self) -> None:
        for name, rows in self._rows.items():
            self.outputs.write_rows(name, rows)
            rows.clear()
        self.outputs.write_rows("rejects", self._rejects)
        self._rejects.clear()

    # --- summary -------------------------------------------------------------------------------------------
    def stats(self, compression: str, threads: int, reader: object, seconds: float) -> dict:
        c = self.counts
        entities = c["items"] + c["properties"]
        keys = (
            "items",
            "properties",
            "items_with_en_label",
            "items_with_en_description",
            "items_with_en_aliases",
            "items_with_enwiki",
            "aliases",
            "claims",
            "deprecated_skipped",
            "novalue_somevalue_skipped",
            "layout_lines",
            "python_fallback_lines",
            "python_fallback_chunks",
        )
        return {
            "stage": STAGE,
            "source": self.source,
            "compression": compression,
            "threads": threads,
            "lines": self.lines,
            "entities": entities,
            **{key: int(c[key]) for key in keys},
            "rejects": sum(self.reasons.values()),
            "rejects_by_reason": dict(sorted(self.reasons.items())),
            "rejects_by_action": dict(sorted(self.actions.items())),
            "truncated": self.error is not None,
            "input_error": self.error,
            "decompressed_bytes": getattr(reader, "position", None),
            "recovered_bytes": getattr(reader, "recovered", 0),
            "seconds": round(seconds, 3),
            "entities_per_second": round(entities / seconds) if seconds > 0 else None,
        }
