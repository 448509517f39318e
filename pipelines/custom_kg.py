"""A custom (or unseen) KG from TSV files -> store tables. The path every evaluation KG takes.

E.tsv: id, label, description[, category]   (description may be empty: the label is used, desc_source='label')
T.tsv: head, relation, tail
R.tsv: id, label[, description]              (optional; relations only named in T.tsv get their id as label)
A.tsv: id, alias                             (optional)
A header line is detected (or forced with header=True/False). Fields are tab-separated and never quoted.
Malformed lines, duplicate ids, triples with an unknown end: rejected with a reason, counted, never fatal.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from kg_store import store
from pipelines.descriptions import create_mention_spans
from pipelines.dump_io import require_file

HEADER_WORDS = {"id", "entity", "entity_id", "qid", "head", "head_id", "relation", "relation_id", "pid", "subject"}


def _has_header(path: Path) -> bool:
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        first = handle.readline().split("\t")[0].strip().lower()
    return first in HEADER_WORDS


def _read_tsv(con: duckdb.DuckDBPyConnection, path: Path, name: str, columns: list[str], min_cols: int,
              header: bool | None) -> int:
    """Load a TSV into temp table `name` (all VARCHAR, row number kept); bad lines -> tsv_rejects."""
    path = require_file(path)
    has_header = _has_header(path) if header is None else header
    width = len(columns)
    col_spec = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name}_raw AS
        SELECT * FROM read_csv(?, delim = '\t', quote = '', escape = '', header = {str(has_header).lower()},
                               columns = {{{col_spec}}}, null_padding = true, ignore_errors = true,
                               store_rejects = true, rejects_table = '{name}_errors',
                               rejects_scan = '{name}_scans', auto_detect = false,
                               strict_mode = false)""", [str(path)])
    con.execute(f"""
        INSERT INTO tsv_rejects
        SELECT 'import-tsv', ?, line::VARCHAR, 'malformed_line: ' || error_type, left(csv_line, 500), 'dropped'
        FROM {name}_errors""", [path.name])
    not_null = " AND ".join(f"nullif(trim(c{i}), '') IS NOT NULL" for i in range(min_cols))
    con.execute(f"""
        INSERT INTO tsv_rejects
        SELECT 'import-tsv', ?, NULL, 'missing_required_field', left(concat_ws('\t', *COLUMNS(*)), 500), 'dropped'
        FROM {name}_raw WHERE NOT ({not_null})""", [path.name])
    renames = ", ".join(f"nullif(trim(c{i}), '') AS {col}" for i, col in enumerate(columns))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        SELECT row_number() OVER () AS row_no, {renames} FROM {name}_raw WHERE {not_null}""")
    return int(con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0])


def import_tsv(con: duckdb.DuckDBPyConnection, entities: Path, triples: Path, relations: Path | None = None,
               aliases: Path | None = None, header: bool | None = None, add_missing_entities: bool = False,
               source: str = "import-tsv") -> dict:
    """Fill an empty store (behind `con`) from TSV files; returns counts for `meta`."""
    t0 = time.perf_counter()
    con.execute("CREATE OR REPLACE TEMP TABLE tsv_rejects (stage VARCHAR, source VARCHAR, position VARCHAR, "
                "reason VARCHAR, raw VARCHAR, action VARCHAR)")
    stats: dict[str, int | float] = {}
    stats["entity_lines"] = _read_tsv(con, Path(entities), "e_in", ["id", "label", "description", "category"],
                                      1, header)
    stats["triple_lines"] = _read_tsv(con, Path(triples), "t_in", ["head", "relation", "tail"], 3, header)
    if relations:
        _read_tsv(con, Path(relations), "r_in", ["id", "label", "description"], 1, header)
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE r_in (row_no BIGINT, id VARCHAR, label VARCHAR, "
                    "description VARCHAR)")
    if aliases:
        _read_tsv(con, Path(aliases), "a_in", ["id", "alias"], 2, header)
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE a_in (row_no BIGINT, id VARCHAR, alias VARCHAR)")

    with store.transaction(con):
        _entities(con, add_missing_entities, stats)
        _relations_triples(con, stats)
        con.execute("INSERT INTO aliases SELECT DISTINCT e.entity_id, a.alias FROM a_in a "
                    "JOIN ents e ON e.qid = a.id")
        con.execute("INSERT INTO rejects SELECT * FROM tsv_rejects")
    stats["rejects"] = int(con.execute("SELECT count(*) FROM rejects").fetchall()[0][0])
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats


def _entities(con: duckdb.DuckDBPyConnection, add_missing: bool, stats: dict) -> None:
    con.execute("""
        CREATE OR REPLACE TEMP TABLE e_dedup AS
        SELECT *, row_number() OVER (PARTITION BY id ORDER BY row_no) AS k FROM e_in""")
    con.execute("""INSERT INTO tsv_rejects SELECT 'import-tsv', 'entities', row_no::VARCHAR, 'duplicate_entity',
                   id, 'dropped' FROM e_dedup WHERE k > 1""")
    extra = ""
    if add_missing:
        extra = """UNION ALL
            SELECT 1e12 + row_number() OVER (ORDER BY min(o)), id, NULL, NULL, NULL FROM (
                SELECT head AS id, row_no * 2 AS o FROM t_in UNION ALL SELECT tail, row_no * 2 + 1 FROM t_in)
            WHERE id NOT IN (SELECT id FROM e_in) GROUP BY id"""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ents AS
        SELECT (row_number() OVER (ORDER BY row_no) - 1)::INTEGER AS entity_id, id AS qid, label,
               description, category
        FROM (SELECT row_no, id, label, description, category FROM e_dedup WHERE k = 1 {extra})""")
    con.execute("""INSERT INTO tsv_rejects SELECT 'import-tsv', 'entities', qid, 'no_label', NULL, 'kept'
                   FROM ents WHERE label IS NULL""")
    con.execute("""
        INSERT INTO categories
        SELECT (row_number() OVER (ORDER BY count(*) DESC, category) - 1)::INTEGER, category, category
        FROM ents WHERE category IS NOT NULL GROUP BY category""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE described AS
        SELECT entity_id, coalesce(description, label) AS description,
               CASE WHEN description IS NOT NULL THEN 'custom' WHEN label IS NOT NULL THEN 'label' END
                   AS desc_source
        FROM ents""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE entity_names AS
        SELECT entity_id, label AS name FROM ents WHERE label IS NOT NULL
        UNION SELECT e.entity_id, a.alias FROM a_in a JOIN ents e ON e.qid = a.id""")
    create_mention_spans(con, "described", "entity_names")
    con.execute("""
        INSERT INTO entities
        SELECT e.entity_id, e.qid, e.label, d.description, d.desc_source, s.desc_mention_start,
               s.desc_mention_end, c.category_id
        FROM ents e JOIN described d USING (entity_id) LEFT JOIN desc_spans s USING (entity_id)
        LEFT JOIN categories c ON c.qid = e.category ORDER BY e.entity_id""")
    stats["entities"] = int(con.execute("SELECT count(*) FROM entities").fetchall()[0][0])
    stats["entities_added_from_triples"] = int(con.execute(
        "SELECT count(*) FROM ents WHERE label IS NULL AND description IS NULL AND category IS NULL "
        "AND qid NOT IN (SELECT id FROM e_in)").fetchall()[0][0])


def _relations_triples(con: duckdb.DuckDBPyConnection, stats: dict) -> None:
    con.execute("""
        INSERT INTO relations
        SELECT (row_number() OVER (ORDER BY o) - 1)::INTEGER, id, coalesce(label, id), description FROM (
            SELECT id, any_value(label) AS label, any_value(description) AS description, min(o) AS o FROM (
                SELECT id, label, description, row_no AS o FROM r_in
                UNION ALL SELECT relation, NULL, NULL, 1e12 + row_no FROM t_in) GROUP BY id)""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE t_resolved AS
        SELECT t.*, h.entity_id AS head_id, r.relation_id, x.entity_id AS tail_id
        FROM t_in t LEFT JOIN ents h ON h.qid = t.head JOIN relations r ON r.pid = t.relation
        LEFT JOIN ents x ON x.qid = t.tail""")
    con.execute("""
        INSERT INTO tsv_rejects
        SELECT 'import-tsv', 'triples', row_no::VARCHAR,
               CASE WHEN head_id IS NULL THEN 'dangling_triple_head' ELSE 'dangling_triple_tail' END,
               head || '\t' || relation || '\t' || tail, 'dropped'
        FROM t_resolved WHERE head_id IS NULL OR tail_id IS NULL""")
    con.execute("""INSERT INTO triples SELECT DISTINCT head_id, relation_id, tail_id FROM t_resolved
                   WHERE head_id IS NOT NULL AND tail_id IS NOT NULL ORDER BY ALL""")
    for key, sql in {
        "relations": "SELECT count(*) FROM relations",
        "triples": "SELECT count(*) FROM triples",
        "dangling_triples": "SELECT count(*) FROM t_resolved WHERE head_id IS NULL OR tail_id IS NULL",
        "categories": "SELECT count(*) FROM categories",
    }.items():
        stats[key] = int(con.execute(sql).fetchall()[0][0])
