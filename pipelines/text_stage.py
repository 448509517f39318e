"""Shared plumbing of the text stages (`wikipedia`, `corpus`): Parquet schemas, buffered row writers,
reject rows, grouped reading of sorted Parquet files, and the stats/_SUCCESS epilogue."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.dump_io import READ_BUFFER, open_recovering, require_file

REJECT_RAW_CHARS = 500

DOCUMENTS = pa.schema([("page_id", pa.int64()), ("title", pa.string()), ("qid", pa.string())])
PASSAGES = pa.schema([("page_id", pa.int64()), ("idx", pa.int32()), ("text", pa.string()),
                      ("doc_start", pa.int32())])  # doc_start: offset of the passage in its document's text
MENTIONS = pa.schema([("page_id", pa.int64()), ("idx", pa.int32()), ("qid", pa.string()),
                      ("char_start", pa.int32()), ("char_end", pa.int32()), ("source", pa.string())])
REJECTS = pa.schema([(name, pa.string()) for name in ("stage", "source", "position", "reason", "raw", "action")])


class RowWriter:
    """Appends rows (tuples in schema order) to one Parquet file, flushing a row group every `batch` rows,
    so memory stays constant however long the input. The file exists (maybe empty) once closed."""

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, batch: int = 50_000) -> None:
        self.path = Path(path)
        self.schema = schema
        self.batch = batch
        self.rows: list[tuple] = []
        self.count = 0
        self._writer = pq.ParquetWriter(self.path, schema, compression="zstd")

    def add(self, *row: object) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            columns = list(zip(*self.rows, strict=True))
            table = pa.Table.from_arrays(
                [pa.array(col, type=field.type) for col, field in zip(columns, self.schema, strict=True)],
                schema=self.schema)
            self._writer.write_table(table)
            self.count += len(self.rows)
            self.rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Rejects(RowWriter):
    """The stage's reject rows (stage, source, position, reason, raw <= 500 chars, action), counted by reason."""

    def __init__(self, path: str | os.PathLike, stage: str, source: str) -> None:
        super().__init__(path, REJECTS)
        self.stage, self.source = stage, source
        self.by_reason: dict[str, int] = {}

    def reject(self, position: object, reason: str, raw: object, action: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        raw_text = None if raw is None else str(raw)[:REJECT_RAW_CHARS]
        self.add(self.stage, self.source, None if position is None else str(position), reason, raw_text, action)


def prepare_out_dir(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Create out_dir, drop a stale _SUCCESS (so a crash is redone), return (out_dir, fresh temp dir)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "_SUCCESS").unlink(missing_ok=True)
    tmp = out / "_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return out, tmp


def finish_stage(out: Path, tmp: Path | None, stats: dict) -> dict:
    """Write stats.json and remove the temp dir. `_SUCCESS` (with the input key) is the flow's to write
    (flows/build_kg.run_stage), after this returns."""
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True, default=str))
    return stats


def iter_groups(path: str | os.PathLike, key: str, columns: list[str],
                batch_size: int = 65_536) -> Iterator[tuple[object, dict[str, list]]]:
    """(key, {column: values}) for each run of equal `key` in a Parquet file sorted by it, read in batches."""
    current: object = None
    acc: dict[str, list] = {c: [] for c in columns}
    for batch in pq.ParquetFile(path).iter_batches(batch_size, columns=[key, *columns]):
        data = batch.to_pydict()
        keys = data[key]
        i = 0
        while i < len(keys):
            j = i
            while j < len(keys) and keys[j] == keys[i]:
                j += 1
            if keys[i] != current and current is not None and acc[columns[0]]:
                yield current, acc
                acc = {c: [] for c in columns}
            current = keys[i]
            for c in columns:
                acc[c].extend(data[c][i:j])
            i = j
    if current is not None and acc[columns[0]]:
        yield current, acc


class GroupCursor:
    """Merge-join helper over `iter_groups`: `take(key)` returns the group of `key` (empty if absent),
    provided keys are requested in ascending order."""

    def __init__(self, groups: Iterator[tuple[object, dict[str, list]]], columns: list[str]) -> None:
        self.groups = groups
        self.columns = columns
        self.head = next(groups, None)

    def take(self, key: object) -> dict[str, list]:
        while self.head is not None and self.head[0] < key:  # type: ignore[operator]
            self.head = next(self.groups, None)
        if self.head is not None and self.head[0] == key:
            rows = self.head[1]
            self.head = next(self.groups, None)
            return rows
        return {c: [] for c in self.columns}


class ResilientLines:
    """Lines of a (maybe compressed) file read through dump_io.open_recovering, which keeps everything before
    a damaged or truncated part (the parallel decoders alone lose it: indexed_bzip2 raises before delivering
    anything, rapidgzip ends silently). A last line without its newline is dropped when the input was cut
    short. After iteration, `error` says why the input ended early (None when it was complete)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = require_file(path)
        self.error: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        raw = open_recovering(self.path)
        held: bytes | None = None
        with io.BufferedReader(raw, READ_BUFFER) as reader:
            for line in reader:
                if held is not None:
                    yield held
                held = line
        self.error = raw.error
        if held is not None and (held.endswith(b"\n") or self.error is None):
            yield held
