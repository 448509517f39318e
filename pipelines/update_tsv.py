"""Incremental update from TSV files of changes (`jaket kg update`): the snapshot for `pipelines.update`.

Same formats as `jaket kg import-tsv`, read as changes:

* entities (id, label, description[, category]): each row is the entity's complete new record (as it would
  be in a from-scratch E.tsv): an existing id is replaced, a new id is appended; an empty description falls back
  to the label ('label'), an empty category means none;
* triples (head, relation, tail): the complete new set of outgoing triples of every head it names (a head not
  named keeps its triples); relations first named here are appended with their pid as label;
* relations (id, label[, description]) and aliases (id, alias): upserts; an entity named in the aliases file
  gets exactly the aliases listed there;
* remove-entities (id) and remove-triples (head, relation, tail): removals. A removed entity loses its
  aliases, triples (both directions) and mentions (each mention logged 'mention_removed_entity', dropped).

The description mention span of every entity named in the entities or aliases file is searched again over its
label and aliases (`pipelines.descriptions`). Bad lines, duplicate ids, unknown ids and dangling triples are
rejected with a reason (stage 'update'), as in the importer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from kg_store import store
from pipelines.custom_kg import _read_tsv
from pipelines.descriptions import create_mention_spans
from pipelines.update import REMOVED, _count, _run_steps, merge_snapshot, snapshot_path, verify

EMPTY = {"e_in": "id VARCHAR, label VARCHAR, description VARCHAR, category VARCHAR",
         "t_in": "head VARCHAR, relation VARCHAR, tail VARCHAR", "r_in": "id VARCHAR, label VARCHAR, "
         "description VARCHAR", "a_in": "id VARCHAR, alias VARCHAR", "x_in": "id VARCHAR",
         "y_in": "head VARCHAR, relation VARCHAR, tail VARCHAR"}
REQUIRED = {"e_in": 1, "t_in": 3, "r_in": 1, "a_in": 2, "x_in": 1, "y_in": 3}   # leading non-empty fields


def _load(con: duckdb.DuckDBPyConnection, name: str, path: Path | None, header: bool | None) -> int:
    columns = [c.split()[0] for c in EMPTY[name].split(", ")]
    if path is None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} (row_no BIGINT, {EMPTY[name]})")
        return 0
    return _read_tsv(con, Path(path), name, columns, REQUIRED[name], header)


def apply_tsv_changes(con: duckdb.DuckDBPyConnection, entities: Path | None = None, triples: Path | None = None,
                      relations: Path | None = None, aliases: Path | None = None,
                      remove_entities: Path | None = None, remove_triples: Path | None = None,
                      header: bool | None = None) -> dict:
    """Apply the change files to the store behind `con` (a copy of the store: the snapshot). Returns counts."""
    con.execute("CREATE OR REPLACE TEMP TABLE tsv_rejects (stage VARCHAR, source VARCHAR, position VARCHAR, "
                "reason VARCHAR, raw VARCHAR, action VARCHAR)")
    stats = {"entity_lines": _load(con, "e_in", entities, header), "triple_lines": _load(con, "t_in", triples, header),
             "relation_lines": _load(con, "r_in", relations, header), "alias_lines": _load(con, "a_in", aliases, header),
             "remove_entity_lines": _load(con, "x_in", remove_entities, header),
             "remove_triple_lines": _load(con, "y_in", remove_triples, header)}
    with store.transaction(con):
        _run_steps("update: apply TSV", [
            ("entities", lambda: _upsert_entities(con)),
            ("remove entities", lambda: _remove_entities(con)),
            ("relations", lambda: _relations(con)),
            ("triples", lambda: _triples(con)),
        ])
        con.execute("UPDATE tsv_rejects SET stage = 'update'")
        stats["rejects"] = _count(con, "SELECT count(*) FROM tsv_rejects")
        con.execute("INSERT INTO rejects SELECT * FROM tsv_rejects")
    return stats


def _live(alias: str) -> str:
    return f"{alias}.desc_source IS DISTINCT FROM '{REMOVED}'"


def _upsert_entities(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE e_dedup AS "
                "SELECT *, row_number() OVER (PARTITION BY id ORDER BY row_no) AS k FROM e_in")
    con.execute("""INSERT INTO tsv_rejects SELECT 'update', 'entities', row_no::VARCHAR, 'duplicate_entity', id,
                   'dropped' FROM e_dedup WHERE k > 1""")
    next_id = _count(con, "SELECT coalesce(max(entity_id), -1) + 1 FROM entities")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE e_up AS
        SELECT coalesce(e.entity_id, {next_id} - 1 + row_number() OVER (
                   PARTITION BY e.entity_id IS NULL ORDER BY u.row_no))::INTEGER AS entity_id,
               u.row_no, u.id AS qid, u.label, u.description, u.category
        FROM e_dedup u LEFT JOIN entities e ON e.qid = u.id WHERE u.k = 1""")
    con.execute("""INSERT INTO tsv_rejects SELECT 'update', 'entities', qid, 'no_label', NULL, 'kept'
                   FROM e_up WHERE label IS NULL""")
    next_cat = _count(con, "SELECT coalesce(max(category_id), -1) + 1 FROM categories")
    con.execute(f"""
        INSERT INTO categories
        SELECT ({next_cat} - 1 + row_number() OVER (ORDER BY min(row_no)))::INTEGER, category, category FROM e_up
        WHERE category IS NOT NULL AND category NOT IN (SELECT qid FROM categories WHERE qid IS NOT NULL)
          AND category NOT IN (SELECT label FROM categories WHERE label IS NOT NULL)
        GROUP BY category""")
    # aliases: an entity named in the aliases file gets exactly those
    con.execute("""
        CREATE OR REPLACE TEMP TABLE a_up AS
        SELECT DISTINCT coalesce(u.entity_id, e.entity_id) AS entity_id, a.id, a.alias
        FROM a_in a LEFT JOIN e_up u ON u.qid = a.id LEFT JOIN entities e ON e.qid = a.id""")
    con.execute("""INSERT INTO tsv_rejects SELECT 'update', 'aliases', id, 'unknown_entity', id || '\t' || alias,
                   'dropped' FROM a_up WHERE entity_id IS NULL""")
    con.execute("DELETE FROM aliases WHERE entity_id IN (SELECT entity_id FROM a_up)")
    con.execute("INSERT INTO aliases SELECT DISTINCT entity_id, alias FROM a_up WHERE entity_id IS NOT NULL")
    # new records, and the description span of everything whose text or names changed
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE described AS
        SELECT entity_id, qid, label, coalesce(description, label) AS description,
               CASE WHEN description IS NOT NULL THEN 'custom' WHEN label IS NOT NULL THEN 'label' END AS desc_source,
               (SELECT min(c.category_id) FROM categories c WHERE c.qid = u.category OR c.label = u.category)
                   AS category_id
        FROM e_up u
        UNION ALL
        SELECT entity_id, qid, label, description, desc_source, category_id FROM entities e
        WHERE entity_id IN (SELECT entity_id FROM a_up) AND entity_id NOT IN (SELECT entity_id FROM e_up)
          AND {_live('e')}""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE entity_names AS
        SELECT entity_id, label AS name FROM described WHERE label IS NOT NULL
        UNION SELECT a.entity_id, a.alias FROM aliases a WHERE a.entity_id IN (SELECT entity_id FROM described)""")
    create_mention_spans(con, "described", "entity_names")
    con.execute("DELETE FROM entities WHERE entity_id IN (SELECT entity_id FROM described)")
    con.execute("""
        INSERT INTO entities
        SELECT d.entity_id, d.qid, d.label, d.description, d.desc_source, s.desc_mention_start,
               s.desc_mention_end, d.category_id
        FROM described d LEFT JOIN desc_spans s USING (entity_id)""")


def _remove_entities(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE x_res AS
        SELECT x.row_no, x.id, e.entity_id FROM x_in x LEFT JOIN entities e ON e.qid = x.id AND {_live('e')}""")
    con.execute("""INSERT INTO tsv_rejects SELECT 'update', 'remove-entities', row_no::VARCHAR, 'unknown_entity',
                   id, 'dropped' FROM x_res WHERE entity_id IS NULL""")
    con.execute("""
        INSERT INTO tsv_rejects
        SELECT 'update', 'mentions', m.passage_id || ':' || m.char_start, 'mention_removed_entity', x.id, 'dropped'
        FROM mentions m JOIN x_res x USING (entity_id)""")
    removed = "(SELECT entity_id FROM x_res WHERE entity_id IS NOT NULL)"
    con.execute(f"DELETE FROM mentions WHERE entity_id IN {removed}")
    con.execute(f"UPDATE documents SET entity_id = NULL WHERE entity_id IN {removed}")
    con.execute(f"DELETE FROM aliases WHERE entity_id IN {removed}")
    con.execute(f"DELETE FROM triples WHERE head_id IN {removed} OR tail_id IN {removed}")
    con.execute(f"DELETE FROM entities WHERE entity_id IN {removed}")


def _relations(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        UPDATE relations SET label = coalesce(r.label, r.id), description = r.description
        FROM (SELECT id, any_value(label) AS label, any_value(description) AS description FROM r_in GROUP BY id) r
        WHERE relations.pid = r.id""")
    next_rel = _count(con, "SELECT coalesce(max(relation_id), -1) + 1 FROM relations")
    con.execute(f"""
        INSERT INTO relations
        SELECT ({next_rel} - 1 + row_number() OVER (ORDER BY o))::INTEGER, id, coalesce(label, id), description
        FROM (SELECT id, any_value(label) AS label, any_value(description) AS description, min(o) AS o FROM (
                  SELECT id, label, description, row_no AS o FROM r_in
                  UNION ALL SELECT relation, NULL, NULL, 1e12 + row_no FROM t_in) GROUP BY id)
        WHERE id NOT IN (SELECT pid FROM relations)""")


def _triples(con: duckdb.DuckDBPyConnection) -> None:
    for name, table in (("t", "t_in"), ("y", "y_in")):
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE {name}_res AS
            SELECT t.*, h.entity_id AS head_id, r.relation_id, x.entity_id AS tail_id
            FROM {table} t LEFT JOIN entities h ON h.qid = t.head AND {_live('h')}
            LEFT JOIN relations r ON r.pid = t.relation
            LEFT JOIN entities x ON x.qid = t.tail AND {_live('x')}""")
    con.execute("""
        INSERT INTO tsv_rejects
        SELECT 'update', 'triples', row_no::VARCHAR,
               CASE WHEN head_id IS NULL THEN 'dangling_triple_head' ELSE 'dangling_triple_tail' END,
               head || '\t' || relation || '\t' || tail, 'dropped'
        FROM t_res WHERE head_id IS NULL OR tail_id IS NULL
        UNION ALL
        SELECT 'update', 'remove-triples', row_no::VARCHAR, 'unknown_triple', head || '\t' || relation || '\t' || tail,
               'dropped'
        FROM y_res y WHERE NOT EXISTS (SELECT 1 FROM triples x WHERE x.head_id = y.head_id
                                       AND x.relation_id = y.relation_id AND x.tail_id = y.tail_id)""")
    con.execute("DELETE FROM triples WHERE head_id IN (SELECT head_id FROM t_res WHERE head_id IS NOT NULL)")
    con.execute("""
        INSERT INTO triples SELECT DISTINCT head_id, relation_id, tail_id FROM t_res
        WHERE head_id IS NOT NULL AND tail_id IS NOT NULL""")
    con.execute("""
        DELETE FROM triples t USING y_res y
        WHERE t.head_id = y.head_id AND t.relation_id = y.relation_id AND t.tail_id = y.tail_id""")


def update_from_tsv(store_path: str | Path, work: Path, **files: Path | None) -> dict:
    """Update `store_path` from change files (keyword arguments of `apply_tsv_changes`); the caller holds
    `store.writer_lock`. The snapshot is a copy of the store in WORK/update/ (deleted afterwards)."""
    store_path, snap = snapshot_path(store_path, work)
    shutil.copyfile(store_path, snap)
    wal = Path(str(store_path) + ".wal")
    if wal.exists():
        shutil.copyfile(wal, Path(str(snap) + ".wal"))
    con = store.connect(snap, read_only=False)
    try:
        applied = apply_tsv_changes(con, **files)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    with store.atomic_store(store_path) as con:
        stats = merge_snapshot(con, store_path, snap, "tsv", keep_prev_rejects=True,
                               meta={"last_update_inputs": {k: str(v) for k, v in files.items()
                                                            if v is not None and k != "header"}})
        verify(con)
    shutil.rmtree(snap.parent, ignore_errors=True)
    return {**stats, "applied": applied}
