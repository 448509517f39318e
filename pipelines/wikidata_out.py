"""Streaming Parquet outputs of the wikidata stage (fixed schemas, one file each, written as chunks arrive).

Compression and writing run in a background thread (pyarrow releases the GIL), next to the parsing of the
following chunk; at most a few tables wait, so memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_S = pa.string()
SCHEMAS = {
    "items": pa.schema([("qid", _S), ("label", _S), ("description", _S), ("enwiki_title", _S)]),
    "properties": pa.schema([("pid", _S), ("label", _S), ("description", _S), ("datatype", _S)]),
    "aliases": pa.schema([("qid", _S), ("alias", _S)]),
    "claims": pa.schema([("head_qid", _S), ("pid", _S), ("tail_qid", _S)]),
    "rejects": pa.schema(
        [("stage", _S), ("source", _S), ("position", pa.int64()), ("reason", _S), ("raw", _S), ("action", _S)]
    ),
}
ROW_GROUP = 65_536
_DONE = None


class ParquetOutputs:
    """`<name>.parquet` for each schema; tables are buffered to row groups of about ROW_GROUP rows."""

    def __init__(self, out_dir: Path) -> None:
        self.writers = {
            name: pq.ParquetWriter(out_dir / f"{name}.parquet", schema, compression="zstd")
            for name, schema in SCHEMAS.items()
        }
        self.pending: dict[str, list[pa.Table]] = {name: [] for name in SCHEMAS}
        self.rows = dict.fromkeys(SCHEMAS, 0)
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def write(self, name: str, table: pa.Table) -> None:
        if self._error is not None:
            raise self._error
        if table.num_rows:
            self.rows[name] += table.num_rows
            self._queue.put((name, table))

    def write_rows(self, name: str, rows: list[tuple]) -> None:
        if rows:
            schema = SCHEMAS[name]
            columns = zip(*rows, strict=True)
            arrays = [pa.array(values, type=f.type) for values, f in zip(columns, schema, strict=True)]
            self.write(name, pa.Table.from_arrays(arrays, schema=schema))

    def _work(self) -> None:
        while (job := self._queue.get()) is not _DONE:
            if self._error is not None:
                continue
            try:
                name, table = job
                schema = SCHEMAS[name]
                self.pending[name].append(table.rename_columns(schema.names).cast(schema))
                if sum(t.num_rows for t in self.pending[name]) >= ROW_GROUP:
                    self._flush(name)
            except BaseException as exc:  # noqa: BLE001 - raised again in the producing thread
                self._error = exc

    def _flush(self, name: str) -> None:
        if self.pending[name]:
            self.writers[name].write_table(pa.concat_tables(self.pending[name]), row_group_size=1 << 22)
            self.pending[name] = []

    def close(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        try:
            if self._error is None:
                for name in self.writers:
                    self._flush(name)
        finally:
            for writer in self.writers.values():
                writer.close()
        if self._error is not None:
            raise self._error
