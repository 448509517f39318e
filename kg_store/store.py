"""The store API: open a KG store read-only or read-write, write tables in one transaction, read the graph
as arrays (CSR adjacency, id maps, descriptions) for the training core.

numpy only here (no torch import), so that the CLI stays fast; `torch.from_numpy` is zero-copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

SCHEMA_SQL = Path(__file__).with_name("schema.sql")
VIEWS_SQL = Path(__file__).with_name("views.sql")
TABLES = ("entities", "aliases", "relations", "triples", "categories", "documents", "passages",
          "mentions", "rejects", "meta")
SCHEMA_VERSION = "1"


class StoreError(RuntimeError):
    """A problem with a store file the user can act on; the CLIs print it as one line."""


class StoreNotFound(StoreError):
    pass


class StoreLocked(StoreError):
    pass


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def connect(path: str | os.PathLike, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open a store. Read-only unless asked; clear one-line errors for a missing or locked file."""
    path = Path(path)
    if read_only and not path.exists():
        raise StoreNotFound(f"store not found: {path}")
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        if _is_lock_error(exc):
            raise StoreLocked(f"store is locked by another writer: {path}") from None
        raise StoreError(f"cannot open store {path}: {str(exc).splitlines()[0]}") from None


def create(path: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """Create an empty store (schema + debug views) and return a read-write connection."""
    con = connect(path, read_only=False)
    con.execute(SCHEMA_SQL.read_text())
    con.execute(VIEWS_SQL.read_text())
    return con


def apply_views(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(VIEWS_SQL.read_text())


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK (and re-raise) when the block raises: all of it or nothing."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def write_tables(con: duckdb.DuckDBPyConnection, tables: Mapping[str, Any], append: bool = False) -> None:
    """Write dataframes (Polars, pandas or Arrow) into store tables in ONE transaction.

    Columns are matched by name (`INSERT ... BY NAME`), so a frame may omit nullable columns.
    Without `append` the tables are emptied first.
    """
    with transaction(con):
        for name, frame in tables.items():
            if name not in TABLES:
                raise ValueError(f"unknown store table {name!r}")
            con.register("_incoming", frame)
            if not append:
                con.execute(f"DELETE FROM {name}")
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _incoming")
            con.unregister("_incoming")


def set_meta(con: duckdb.DuckDBPyConnection, values: Mapping[str, Any]) -> None:
    """Upsert meta key/values (values stored as strings; dicts/lists as JSON)."""
    import orjson

    rows = []
    for key, value in values.items():
        if isinstance(value, (dict, list, tuple)):
            value = orjson.dumps(value).decode()
        rows.append((key, None if value is None else str(value)))
    with transaction(con):
        con.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k, _ in rows])
        con.executemany("INSERT INTO meta VALUES (?, ?)", rows)


@contextlib.contextmanager
def writer_lock(store_path: str | os.PathLike) -> Iterator[None]:
    """An advisory lock next to the store (`STORE.lock`) held for a whole build or update.

    A second writer fails at once with StoreLocked instead of waiting or corrupting. The lock also covers a
    store that is held open read-write by DuckDB in another process (DuckDB's own file lock).
    """
    store_path = Path(store_path)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = store_path.with_name(store_path.name + ".lock")
    handle = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLocked(f"store is locked by another writer: {store_path}") from None
        if store_path.exists():
            try:
                duckdb.connect(str(store_path), read_only=False).close()
            except duckdb.Error as exc:
                if _is_lock_error(exc):
                    raise StoreLocked(f"store is locked by another writer: {store_path}") from None
                raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {time.time():.0f}\n")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        with contextlib.suppress(OSError):
            lock_path.unlink()


@contextlib.contextmanager
def atomic_store(store_path: str | os.PathLike) -> Iterator[duckdb.DuckDBPyConnection]:
    """Build a new store in a temporary file beside `store_path` and swap it in with one rename.

    A reader never sees a half-built store: until the rename it keeps reading the old file.
    On any error the temporary file is removed and the old store is untouched.
    """
    store_path = Path(store_path)
    tmp = store_path.with_name(f".{store_path.name}.tmp-{os.getpid()}")
    for leftover in (tmp, Path(str(tmp) + ".wal")):
        leftover.unlink(missing_ok=True)
    con = create(tmp)
    try:
        yield con
        con.execute("CHECKPOINT")
        con.close()
        os.replace(tmp, store_path)
    except BaseException:
        with contextlib.suppress(Exception):
            con.close()
        for leftover in (tmp, Path(str(tmp) + ".wal")):
            leftover.unlink(missing_ok=True)
        raise


@dataclass
class CSR:
    """Adjacency in compressed sparse rows: neighbours of v are neighbors[indptr[v]:indptr[v+1]],
    reached through relations[indptr[v]:indptr[v+1]]. `inverse` marks edges added as reversed triples."""

    indptr: np.ndarray      # int64 [num_entities + 1]
    neighbors: np.ndarray   # int64 [num_edges]
    relations: np.ndarray   # int64 [num_edges]
    inverse: np.ndarray     # bool  [num_edges]

    @property
    def num_nodes(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_edges(self) -> int:
        return len(self.neighbors)

    def degree(self) -> np.ndarray:
        return np.diff(self.indptr)


class KGStore:
    """Read access to one store for the training core and the evaluation harness."""

    def __init__(self, path: str | os.PathLike, read_only: bool = True) -> None:
        self.path = Path(path)
        self.con = connect(self.path, read_only=read_only)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> KGStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def scalar(self, sql: str, params: list | None = None) -> Any:
        return self.query(sql, params)[0][0]

    def counts(self) -> dict[str, int]:
        return {t: int(self.scalar(f"SELECT count(*) FROM {t}")) for t in TABLES if t != "meta"}

    def meta(self) -> dict[str, str]:
        return dict(self.query("SELECT key, value FROM meta ORDER BY key"))

    @property
    def num_entities(self) -> int:
        return int(self.scalar("SELECT count(*) FROM entities"))

    @property
    def num_relations(self) -> int:
        return int(self.scalar("SELECT count(*) FROM relations"))

    @property
    def num_categories(self) -> int:
        return int(self.scalar("SELECT count(*) FROM categories"))

    def _column(self, sql: str, dtype: Any = np.int64) -> np.ndarray:
        column = next(iter(self.con.execute(sql).fetchnumpy().values()))
        return np.asarray(column, dtype=dtype)

    def entity_qids(self) -> list[str]:
        return [q for (q,) in self.query("SELECT qid FROM entities ORDER BY entity_id")]

    def qid_to_id(self) -> dict[str, int]:
        return dict(self.query("SELECT qid, entity_id FROM entities"))

    def relation_pids(self) -> list[str]:
        return [p for (p,) in self.query("SELECT pid FROM relations ORDER BY relation_id")]

    def entity_categories(self) -> np.ndarray:
        """category_id per entity (dense order), -1 where none."""
        return self._column("SELECT coalesce(category_id, -1) FROM entities ORDER BY entity_id")

    def triples(self) -> np.ndarray:
        """int64 [num_triples, 3] of (head_id, relation_id, tail_id)."""
        cols = self.con.execute("SELECT head_id, relation_id, tail_id FROM triples").fetchnumpy()
        return np.stack([np.asarray(c, dtype=np.int64) for c in cols.values()], axis=1).reshape(-1, 3)

    def csr(self, add_inverse: bool = True) -> CSR:
        """Adjacency of every entity over its triples, sorted by entity id.

        With `add_inverse`, a triple (h, r, t) gives the edge h -> t AND the edge t -> h with the same relation
        id flagged `inverse` (consumers give inverse edges their own relation embedding if they wish).
        """
        triples = self.triples()
        n = self.num_entities
        src, dst, rel = triples[:, 0], triples[:, 2], triples[:, 1]
        inverse = np.zeros(len(src), dtype=bool)
        if add_inverse:
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
            rel = np.concatenate([rel, rel])
            inverse = np.concatenate([inverse, np.ones(len(triples), dtype=bool)])
        order = np.lexsort((dst, src))
        src, dst, rel, inverse = src[order], dst[order], rel[order], inverse[order]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
        return CSR(indptr=indptr, neighbors=dst, relations=rel, inverse=inverse)

    def entity_descriptions(self) -> list[tuple[int, str, int | None, int | None]]:
        """(entity_id, description text, mention char start, end) in id order; the text falls back to the
        label, then the qid, so every entity has something to encode."""
        return self.query(
            "SELECT entity_id, coalesce(description, label, qid), desc_mention_start, desc_mention_end "
            "FROM entities ORDER BY entity_id")

    def relation_descriptions(self) -> list[tuple[int, str]]:
        """(relation_id, text) where text = 'label, description' (or whatever part exists, else the pid)."""
        return self.query(
            "SELECT relation_id, coalesce(nullif(concat_ws(', ', label, description), ''), pid) "
            "FROM relations ORDER BY relation_id")

    def passage_ids(self, min_mentions: int = 1) -> np.ndarray:
        """Ids of passages with at least `min_mentions` mentions (the text-side training pool)."""
        return self._column(
            "SELECT passage_id FROM mentions GROUP BY passage_id "
            f"HAVING count(*) >= {int(min_mentions)} ORDER BY passage_id")

    def passages_with_mentions(self, passage_ids: list[int] | np.ndarray
                               ) -> list[tuple[int, str, list[tuple[int, int, int]]]]:
        """(passage_id, text, [(char_start, char_end, entity_id), ...] sorted by start) for each id, in order."""
        ids = [int(i) for i in passage_ids]
        if not ids:
            return []
        texts = dict(self.query("SELECT passage_id, text FROM passages WHERE passage_id IN "
                                "(SELECT unnest(?::INTEGER[]))", [ids]))
        spans: dict[int, list[tuple[int, int, int]]] = {i: [] for i in ids}
        for pid, start, end, eid in self.query(
                "SELECT passage_id, char_start, char_end, entity_id FROM mentions WHERE passage_id IN "
                "(SELECT unnest(?::INTEGER[])) ORDER BY passage_id, char_start", [ids]):
            spans[pid].append((start, end, eid))
        return [(i, texts[i], spans[i]) for i in ids if i in texts]


def check_integrity(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Problems that would break the training core: non-dense ids, dangling references. Empty = healthy."""
    problems = []
    for table, col in (("entities", "entity_id"), ("relations", "relation_id"), ("categories", "category_id"),
                       ("documents", "doc_id"), ("passages", "passage_id")):
        n, lo, hi, distinct = con.execute(
            f"SELECT count(*), min({col}), max({col}), count(DISTINCT {col}) FROM {table}").fetchall()[0]
        if n and (lo != 0 or hi != n - 1 or distinct != n):
            problems.append(f"{table}.{col} is not dense 0..{n - 1} (min {lo}, max {hi}, distinct {distinct})")
    checks = {
        "triples with unknown head/tail": "SELECT count(*) FROM triples WHERE head_id NOT IN (SELECT entity_id "
        "FROM entities) OR tail_id NOT IN (SELECT entity_id FROM entities)",
        "triples with unknown relation": "SELECT count(*) FROM triples WHERE relation_id NOT IN "
        "(SELECT relation_id FROM relations)",
        "mentions with unknown entity": "SELECT count(*) FROM mentions WHERE entity_id NOT IN "
        "(SELECT entity_id FROM entities)",
        "mentions with unknown passage": "SELECT count(*) FROM mentions WHERE passage_id NOT IN "
        "(SELECT passage_id FROM passages)",
        "mentions outside their passage": "SELECT count(*) FROM mentions m JOIN passages p USING (passage_id) "
        "WHERE m.char_start < 0 OR m.char_end > length(p.text) OR m.char_start >= m.char_end",
        "entities with unknown category": "SELECT count(*) FROM entities WHERE category_id IS NOT NULL AND "
        "category_id NOT IN (SELECT category_id FROM categories)",
    }
    for what, sql in checks.items():
        bad = con.execute(sql).fetchall()[0][0]
        if bad:
            problems.append(f"{bad} {what}")
    return problems


def table_checksums(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...] = TABLES[:-1]
                    ) -> dict[str, tuple[int, str]]:
    """(row count, order-independent content checksum) per table; `meta` is left out (it holds timings)."""
    result = {}
    for table in tables:
        n, digest = con.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0)::VARCHAR FROM {table} t").fetchall()[0]
        result[table] = (int(n), digest)
    return result
