"""Incremental updates of a store: new data in, the same dense ids out for everything that was already there.

An update is a *snapshot merge*. The new data is first made into a complete store of its own (the snapshot):
for a newer dump, exactly the store a from-scratch build of it would give (`pipelines.assemble`); for a TSV
of changed entities, a copy of the current store with the changes applied (`pipelines.update_tsv`). The
snapshot is then merged with the current store into a new file that replaces it atomically:

* entities, relations and categories are matched on their own ids (QID / PID / class QID): a matched row keeps
  its dense id and takes the snapshot's fields; an unmatched snapshot row is appended (ids n, n+1, ... in the
  snapshot's order), so the result equals the snapshot up to id assignment;
* an entity missing from the snapshot is *removed*: its row stays as a tombstone (qid and label kept,
  description/mention span/category NULL, `desc_source = 'removed'`, no aliases, triples or mentions) so that
  its id is never reused and the memory stays aligned; it is logged in `rejects` ('entity_removed', kept). If
  it comes back in a later update it gets its old id again ('restored'). Relations and categories missing from
  the snapshot keep their rows (and ids) unchanged; a removed relation has no triples;
* triples, aliases, documents, passages and mentions are the snapshot's, re-keyed to the stable entity ids
  (document and passage ids are the snapshot's own: nothing outside the store keys on them);
* `entity_changes` / `relation_changes` get one row per changed id and kind of change, with the update's
  sequence number (`meta.update_seq`) and time; `meta.last_update` summarises the update.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from kg_store import store
from pipelines.assemble import AssembleOptions, assemble
from pipelines.progress import progress

log = logging.getLogger(__name__)

REMOVED = "removed"                     # desc_source of a tombstone
MEMORY_CHANGES = ("new", "description")  # entity changes that make its memory row stale
ENTITY_TEXT = "coalesce({t}.description, {t}.label, {t}.qid)"   # what the memory encodes (KGStore)


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])


def _has_table(con: duckdb.DuckDBPyConnection, database: str, table: str) -> bool:
    return _count(con, f"SELECT count(*) FROM duckdb_tables() WHERE database_name = '{database}' "
                       f"AND table_name = '{table}'") > 0


def _run_steps(desc: str, steps: list[tuple[str, Callable[[], Any]]]) -> None:
    """Run named steps with a progress bar over them (a terminal) or log lines (elsewhere)."""
    bar = progress(total=len(steps), desc=desc, unit="step")
    try:
        for name, fn in steps:
            bar.set_postfix(step=name)
            t0 = time.perf_counter()
            fn()
            log.debug("%s: %s took %.2fs", desc, name, time.perf_counter() - t0)
            bar.update(1)
    finally:
        bar.close()


def merge_snapshot(con: duckdb.DuckDBPyConnection, prev: Path, snap: Path, source: str,
                   keep_prev_rejects: bool = False, meta: dict | None = None) -> dict:
    """Fill the empty store behind `con` with snapshot `snap` re-keyed to the ids of store `prev`.

    `keep_prev_rejects`: the snapshot's rejects already include the previous ones (a TSV update); otherwise
    the previous store's update log ('update' stage rejects) is carried over beside the snapshot's rejects.
    Returns the update's counts (also in meta `last_update`)."""
    con.execute(f"ATTACH {_sql_path(Path(prev))} AS prev (READ_ONLY)")
    con.execute(f"ATTACH {_sql_path(Path(snap))} AS snap (READ_ONLY)")
    try:
        seq = 1 + int(dict(con.execute("SELECT key, value FROM prev.meta").fetchall()).get("update_seq") or 0)
        now = datetime.now(UTC).replace(tzinfo=None)
        n = {t: _count(con, f"SELECT count(*) FROM prev.{t}") for t in ("entities", "relations", "categories")}
        _run_steps("update: merge", [
            ("id maps", lambda: _id_maps(con, n)),
            ("entities", lambda: _entities(con)),
            ("relations+categories", lambda: _relations_categories(con)),
            ("triples+aliases", lambda: _triples_aliases(con)),
            ("text", lambda: _text(con)),
            ("changes", lambda: _changes(con, n, seq, now)),
            ("rejects+meta", lambda: _rejects(con, keep_prev_rejects, seq)),
        ])
        counts = dict(con.execute(
            "SELECT change, count(*) FROM entity_changes WHERE update_seq = ? GROUP BY ALL ORDER BY ALL",
            [seq]).fetchall())
        rel_counts = dict(con.execute(
            "SELECT change, count(*) FROM relation_changes WHERE update_seq = ? GROUP BY ALL ORDER BY ALL",
            [seq]).fetchall())
        stats = {"update_seq": seq, "source": source, "at": now.isoformat(timespec="seconds"),
                 "entities_before": n["entities"], "entities": _count(con, "SELECT count(*) FROM entities"),
                 "entity_changes": counts, "relation_changes": rel_counts,
                 "memory_stale": _count(con, "SELECT count(DISTINCT entity_id) FROM entity_changes WHERE "
                                             f"update_seq = {seq} AND change IN {MEMORY_CHANGES}")}
        con.execute("DETACH prev")
        con.execute("DETACH snap")
    except BaseException:
        for name in ("prev", "snap"):
            try:
                con.execute(f"DETACH {name}")
            except duckdb.Error:
                pass
        raise
    rejects = dict(con.execute("SELECT reason, count(*) FROM rejects GROUP BY ALL").fetchall())
    store.set_meta(con, {**(meta or {}), "update_seq": seq, "last_update": stats, "rejects_by_reason": rejects})
    return stats


def _id_maps(con: duckdb.DuckDBPyConnection, n: dict[str, int]) -> None:
    """snapshot id -> stable id for entities (by qid), relations (by pid), categories (by class qid, or the
    label of the qid-less 'other' class); unmatched snapshot rows are appended in snapshot order."""
    for name, table, key, id_col in (("emap", "entities", "qid", "entity_id"),
                                     ("rmap", "relations", "pid", "relation_id"),
                                     ("cmap", "categories", "coalesce(qid, chr(0) || label)", "category_id")):
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE {name} AS
            WITH s AS (SELECT {id_col} AS sid, {key} AS k FROM snap.{table}),
                 p AS (SELECT {id_col} AS pid_, {key} AS k FROM prev.{table}),
                 j AS (SELECT s.sid, s.k, p.pid_ FROM s LEFT JOIN p USING (k))
            SELECT sid, k, pid_::INTEGER AS id FROM j WHERE pid_ IS NOT NULL
            UNION ALL
            SELECT sid, k, ({n[table]} + row_number() OVER (ORDER BY sid) - 1)::INTEGER FROM j WHERE pid_ IS NULL""")


def _entities(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""
        INSERT INTO entities
        SELECT m.id, s.qid, s.label, s.description, s.desc_source, s.desc_mention_start, s.desc_mention_end, c.id
        FROM snap.entities s JOIN emap m ON m.sid = s.entity_id LEFT JOIN cmap c ON c.sid = s.category_id
        UNION ALL
        SELECT p.entity_id, p.qid, p.label, NULL, '{REMOVED}', NULL, NULL, NULL
        FROM prev.entities p WHERE NOT EXISTS (SELECT 1 FROM emap m WHERE m.k = p.qid)
        ORDER BY 1""")


def _relations_categories(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        INSERT INTO relations
        SELECT m.id, s.pid, s.label, s.description FROM snap.relations s JOIN rmap m ON m.sid = s.relation_id
        UNION ALL
        SELECT * FROM prev.relations p WHERE NOT EXISTS (SELECT 1 FROM rmap m WHERE m.k = p.pid)
        ORDER BY 1""")
    con.execute("""
        INSERT INTO categories
        SELECT m.id, s.qid, s.label FROM snap.categories s JOIN cmap m ON m.sid = s.category_id
        UNION ALL
        SELECT * FROM prev.categories p
        WHERE NOT EXISTS (SELECT 1 FROM cmap m WHERE m.k = coalesce(p.qid, chr(0) || p.label))
        ORDER BY 1""")


def _triples_aliases(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        INSERT INTO triples
        SELECT DISTINCT h.id, r.id, t.id FROM snap.triples x
        JOIN emap h ON h.sid = x.head_id JOIN rmap r ON r.sid = x.relation_id JOIN emap t ON t.sid = x.tail_id
        ORDER BY ALL""")
    con.execute("""
        INSERT INTO aliases
        SELECT DISTINCT m.id, a.alias FROM snap.aliases a JOIN emap m ON m.sid = a.entity_id ORDER BY ALL""")


def _text(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        INSERT INTO documents
        SELECT d.doc_id, d.title, m.id, d.source, d.source_id
        FROM snap.documents d LEFT JOIN emap m ON m.sid = d.entity_id ORDER BY d.doc_id""")
    con.execute("INSERT INTO passages SELECT * FROM snap.passages ORDER BY passage_id")
    con.execute("""
        INSERT INTO mentions
        SELECT x.passage_id, m.id, x.char_start, x.char_end, x.source
        FROM snap.mentions x JOIN emap m ON m.sid = x.entity_id ORDER BY x.passage_id, x.char_start""")


def _changes(con: duckdb.DuckDBPyConnection, n: dict[str, int], seq: int, now: datetime) -> None:
    """entity_changes / relation_changes: the previous history plus this update's rows."""
    for table in ("entity_changes", "relation_changes"):
        if _has_table(con, "prev", table):
            con.execute(f"INSERT INTO {table} SELECT * FROM prev.{table}")
    new_text, old_text = ENTITY_TEXT.format(t="e"), ENTITY_TEXT.format(t="p")
    changed = f"""
        SELECT e.entity_id, 'new' AS change FROM entities e WHERE e.entity_id >= {n['entities']}
        UNION ALL SELECT e.entity_id, x.change FROM entities e JOIN prev.entities p USING (entity_id),
        LATERAL (SELECT unnest([
            CASE WHEN e.desc_source = '{REMOVED}' AND p.desc_source IS DISTINCT FROM '{REMOVED}' THEN 'removed' END,
            CASE WHEN p.desc_source = '{REMOVED}' AND e.desc_source IS DISTINCT FROM '{REMOVED}' THEN 'restored' END,
            CASE WHEN {new_text} IS DISTINCT FROM {old_text}
                   OR e.desc_mention_start IS DISTINCT FROM p.desc_mention_start
                   OR e.desc_mention_end IS DISTINCT FROM p.desc_mention_end THEN 'description' END,
            CASE WHEN e.label IS DISTINCT FROM p.label THEN 'label' END,
            CASE WHEN e.category_id IS DISTINCT FROM p.category_id THEN 'category' END]) AS change) x
        WHERE x.change IS NOT NULL
        UNION ALL SELECT DISTINCT entity_id, 'aliases' FROM (
            (SELECT * FROM aliases EXCEPT SELECT * FROM prev.aliases)
            UNION ALL (SELECT * FROM prev.aliases EXCEPT SELECT * FROM aliases))
        WHERE entity_id < {n['entities']}
        UNION ALL SELECT DISTINCT unnest([head_id, tail_id]) AS entity_id, 'triples' FROM (
            (SELECT * FROM triples EXCEPT SELECT * FROM prev.triples)
            UNION ALL (SELECT * FROM prev.triples EXCEPT SELECT * FROM triples))"""
    con.execute(f"""
        INSERT INTO entity_changes
        SELECT DISTINCT c.entity_id, e.qid, c.change, {seq}, ?::TIMESTAMP
        FROM ({changed}) c JOIN entities e USING (entity_id)
        WHERE c.change <> 'triples' OR c.entity_id < {n['entities']}
        ORDER BY 1, 3""", [now])
    # a relation's current state: removed iff its latest new/removed/restored row says so
    con.execute("""
        CREATE OR REPLACE TEMP TABLE relations_removed AS
        SELECT relation_id FROM (
            SELECT relation_id, change FROM relation_changes WHERE change IN ('new', 'removed', 'restored')
            QUALIFY row_number() OVER (PARTITION BY relation_id ORDER BY update_seq DESC) = 1)
        WHERE change = 'removed'""")
    con.execute(f"""
        INSERT INTO relation_changes
        SELECT r.relation_id, r.pid, x.change, {seq}, ?::TIMESTAMP FROM relations r
        LEFT JOIN prev.relations p USING (relation_id),
        LATERAL (SELECT unnest([
            CASE WHEN r.relation_id >= {n['relations']} THEN 'new' END,
            CASE WHEN r.relation_id < {n['relations']} AND (r.label IS DISTINCT FROM p.label
                 OR r.description IS DISTINCT FROM p.description) THEN 'description' END,
            CASE WHEN r.relation_id < {n['relations']} AND r.pid NOT IN (SELECT k FROM rmap)
                 AND r.relation_id NOT IN (SELECT relation_id FROM relations_removed) THEN 'removed' END,
            CASE WHEN r.pid IN (SELECT k FROM rmap)
                 AND r.relation_id IN (SELECT relation_id FROM relations_removed) THEN 'restored' END]) AS change) x
        WHERE x.change IS NOT NULL ORDER BY 1, 3""", [now])


def _rejects(con: duckdb.DuckDBPyConnection, keep_prev_rejects: bool, seq: int) -> None:
    con.execute("INSERT INTO rejects SELECT * FROM snap.rejects")
    if not keep_prev_rejects:
        con.execute("INSERT INTO rejects SELECT * FROM prev.rejects WHERE stage = 'update'")
    con.execute(f"""
        INSERT INTO rejects
        SELECT 'update', 'update ' || {seq}, c.qid, 'entity_removed', left(e.label, 500), 'kept'
        FROM entity_changes c JOIN entities e USING (entity_id) WHERE c.update_seq = {seq} AND c.change = 'removed'
        UNION ALL
        SELECT 'update', 'update ' || {seq}, pid, 'relation_removed', NULL, 'kept'
        FROM relation_changes WHERE update_seq = {seq} AND change = 'removed'""")
    con.execute("INSERT INTO meta SELECT * FROM snap.meta WHERE key NOT IN ('update_seq', 'last_update')")


def verify(con: duckdb.DuckDBPyConnection) -> None:
    problems = store.check_integrity(con)
    if problems:
        raise RuntimeError("store integrity check failed after the update: " + "; ".join(problems))


def snapshot_path(store_path: str | Path, work: Path) -> tuple[Path, Path]:
    """(the existing store, a fresh WORK/update/snapshot.duckdb path) for an update's snapshot."""
    store_path = Path(store_path)
    if not store_path.is_file():
        raise store.StoreNotFound(f"store not found: {store_path}")
    folder = Path(work) / "update"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return store_path, folder / "snapshot.duckdb"


def update_from_stages(store_path: str | Path, wikidata_dir: Path, options: AssembleOptions, work: Path,
                       meta: dict | None = None) -> dict:
    """Update `store_path` from stage outputs of newer dumps (the caller holds `store.writer_lock`).

    The snapshot is assembled from the stage outputs exactly like a from-scratch build (into
    WORK/update/snapshot.duckdb, deleted afterwards), then merged with the current store (module docstring)."""
    store_path, snap = snapshot_path(store_path, work)
    con = store.create(snap)
    try:
        assembled = assemble(con, Path(wikidata_dir), options)
        store.set_meta(con, assembled)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    with store.atomic_store(store_path) as con:
        stats = merge_snapshot(con, store_path, snap, "dumps", meta=meta)
        verify(con)
    shutil.rmtree(snap.parent, ignore_errors=True)
    return {**stats, "assemble": assembled}
