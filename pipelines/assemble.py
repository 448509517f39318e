"""Stage `assemble`: stage outputs (Parquet) -> the store tables, in one DuckDB transaction.

Dense ids, triples with both ends present (distinct), categories collapsed to the top-K P31 classes,
descriptions with their source and mention span, documents/passages/mentions re-keyed, every reject.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from kg_store import store
from pipelines.descriptions import choose_descriptions_sql, create_mention_spans
from pipelines.progress import progress
from pipelines.shards import stage_files

log = logging.getLogger(__name__)

INSTANCE_OF = "P31"
REJECT_RAW_CHARS = 500


@dataclass
class AssembleOptions:
    top_categories: int = 100        # P31 classes kept as categories (by number of instances)
    category_other: bool = False     # map instances of the other classes to one 'other' category (else NULL)
    text_dirs: list[tuple[str, Path]] = field(default_factory=list)  # (source name, stage dir), in priority


def _parquet(path: Path) -> str:
    return "read_parquet('" + str(path).replace("'", "''") + "')"


def _exists(path: Path) -> bool:
    return path.is_file()


def _parquet_files(paths: list[Path], options: str = "") -> str:
    """read_parquet over a stage's files: its own, or its shards' in shard order."""
    names = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
    return f"read_parquet([{names}]{options})"


def assemble(con: duckdb.DuckDBPyConnection, wikidata_dir: Path, options: AssembleOptions) -> dict:
    """Fill the (empty, freshly created) store behind `con`. Returns counts for `meta`."""
    t0 = time.perf_counter()
    wd = Path(wikidata_dir)
    stats: dict[str, int | float] = {}
    steps = [("entities", lambda: _load_entities(con, wd, stats)),
             ("relations+triples", lambda: _load_relations_and_triples(con, wd, stats)),
             ("categories", lambda: _load_categories(con, wd, options, stats)),
             ("text", lambda: load_text(con, options.text_dirs, stats)),
             ("descriptions", lambda: _load_descriptions(con, options.text_dirs, stats)),
             ("entities table", lambda: _load_entities_table(con)),
             ("rejects", lambda: _load_rejects(con, [wd] + [d for _, d in options.text_dirs]))]
    bar = progress(total=len(steps), desc="assemble", unit="step")   # a bar on a terminal, else log lines
    with store.transaction(con):
        try:
            for name, step in steps:
                bar.set_postfix(step=name)
                step()
                bar.update(1)
        finally:
            bar.close()
    stats["assemble_seconds"] = round(time.perf_counter() - t0, 3)
    return stats


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])


def _reject(con: duckdb.DuckDBPyConnection, select_sql: str) -> None:
    """Append rows (stage, source, position, reason, raw, action) to the assembly's reject buffer."""
    con.execute(f"INSERT INTO assemble_rejects {select_sql}")


def _load_entities(con: duckdb.DuckDBPyConnection, wd: Path, stats: dict) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE assemble_rejects (stage VARCHAR, source VARCHAR, "
                "position VARCHAR, reason VARCHAR, raw VARCHAR, action VARCHAR)")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE items_raw AS
        SELECT * EXCLUDE (filename),
               row_number() OVER (PARTITION BY qid ORDER BY filename, file_row_number) AS dup_rank
        FROM {_parquet_files(stage_files(wd, "items"), ", filename = true, file_row_number = true")}""")
    _reject(con, """SELECT 'assemble', NULL, qid, 'duplicate_entity', NULL, 'dropped'
                    FROM items_raw WHERE dup_rank > 1""")
    stats["duplicate_entities"] = _count(con, "SELECT count(*) FROM items_raw WHERE dup_rank > 1")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE items AS
        SELECT (row_number() OVER (ORDER BY try_cast(substr(qid, 2) AS BIGINT) NULLS LAST, qid) - 1)::INTEGER
                   AS entity_id,
               qid, label, description AS wd_description, enwiki_title
        FROM items_raw WHERE dup_rank = 1""")
    stats["entities"] = _count(con, "SELECT count(*) FROM items")
    aliases = stage_files(wd, "aliases")
    if aliases:
        con.execute(f"""
            INSERT INTO aliases
            SELECT DISTINCT i.entity_id, a.alias FROM {_parquet_files(aliases)} a JOIN items i USING (qid)
            WHERE a.alias IS NOT NULL AND a.alias <> ''""")
    stats["aliases"] = _count(con, "SELECT count(*) FROM aliases")


def _load_relations_and_triples(con: duckdb.DuckDBPyConnection, wd: Path, stats: dict) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE claims AS SELECT * FROM {_parquet_files(stage_files(wd, 'claims'))}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE props AS
        SELECT pid, any_value(label) AS label, any_value(description) AS description,
               any_value(datatype) AS datatype
        FROM {_parquet_files(stage_files(wd, 'properties'))} GROUP BY pid""")
    # relations: every item-valued property, plus any pid used by claims even without a property record
    con.execute("""
        INSERT INTO relations
        SELECT (row_number() OVER (ORDER BY try_cast(substr(pid, 2) AS BIGINT) NULLS LAST, pid) - 1)::INTEGER,
               pid, label, description
        FROM (SELECT p.pid, p.label, p.description FROM props p WHERE p.datatype = 'wikibase-item'
              UNION
              SELECT DISTINCT c.pid, p.label, p.description FROM claims c LEFT JOIN props p USING (pid))""")
    stats["relations"] = _count(con, "SELECT count(*) FROM relations")
    stats["relations_without_property_record"] = _count(
        con, "SELECT count(*) FROM relations WHERE pid NOT IN (SELECT pid FROM props)")
    stats["claims_item_valued"] = _count(con, "SELECT count(*) FROM claims")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE claims_resolved AS
        SELECT c.head_qid, c.pid, c.tail_qid, h.entity_id AS head_id, r.relation_id, t.entity_id AS tail_id
        FROM claims c
        LEFT JOIN items h ON h.qid = c.head_qid
        LEFT JOIN items t ON t.qid = c.tail_qid
        JOIN relations r ON r.pid = c.pid""")
    stats["triples_both_ends_present"] = _count(
        con, "SELECT count(*) FROM claims_resolved WHERE head_id IS NOT NULL AND tail_id IS NOT NULL")
    stats["dangling_triples"] = _count(
        con, "SELECT count(*) FROM claims_resolved WHERE head_id IS NULL OR tail_id IS NULL")
    _reject(con, """
        SELECT 'assemble', NULL, head_qid,
               CASE WHEN head_id IS NULL THEN 'dangling_triple_head' ELSE 'dangling_triple_tail' END,
               head_qid || ' ' || pid || ' ' || tail_qid, 'dropped'
        FROM claims_resolved WHERE head_id IS NULL OR tail_id IS NULL""")
    con.execute("""
        INSERT INTO triples
        SELECT DISTINCT head_id, relation_id, tail_id FROM claims_resolved
        WHERE head_id IS NOT NULL AND tail_id IS NOT NULL
        ORDER BY head_id, relation_id, tail_id""")
    stats["triples"] = _count(con, "SELECT count(*) FROM triples")


def _load_categories(con: duckdb.DuckDBPyConnection, wd: Path, options: AssembleOptions, stats: dict) -> None:
    """Categories from P31 ('instance of'): the top-K classes by number of instances; each entity gets its
    most frequent kept class. Instances of other classes map to 'other' (flag) or NULL."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE instance_of AS
        SELECT DISTINCT head_id AS entity_id, tail_qid AS class_qid
        FROM claims_resolved WHERE pid = '{INSTANCE_OF}' AND head_id IS NOT NULL""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE class_rank AS
        SELECT class_qid, count(*) AS n,
               (row_number() OVER (ORDER BY count(*) DESC, class_qid) - 1)::INTEGER AS category_id
        FROM instance_of GROUP BY class_qid
        QUALIFY category_id < {int(options.top_categories)}""")
    con.execute("""
        INSERT INTO categories
        SELECT c.category_id, c.class_qid, coalesce(i.label, c.class_qid)
        FROM class_rank c LEFT JOIN items i ON i.qid = c.class_qid ORDER BY c.category_id""")
    other_id = _count(con, "SELECT count(*) FROM categories")
    if options.category_other:
        con.execute(f"INSERT INTO categories VALUES ({other_id}, NULL, 'other')")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE entity_category AS
        SELECT o.entity_id,
               coalesce(min(c.category_id), {other_id if options.category_other else 'NULL'}) AS category_id
        FROM instance_of o LEFT JOIN class_rank c USING (class_qid)
        GROUP BY o.entity_id""")
    stats["categories"] = _count(con, "SELECT count(*) FROM categories")
    stats["p31_classes"] = _count(con, "SELECT count(DISTINCT class_qid) FROM instance_of")
    stats["entities_with_category"] = _count(
        con, "SELECT count(*) FROM entity_category WHERE category_id IS NOT NULL")


def load_text(con: duckdb.DuckDBPyConnection, text_dirs: list[tuple[str, Path]], stats: dict) -> None:
    """documents/passages/mentions of each text stage, re-keyed to dense ids; mentions of unknown entities
    are rejected (counted)."""
    con.execute("CREATE OR REPLACE TEMP TABLE docs_all (src_rank INTEGER, source VARCHAR, page_id VARCHAR, "
                "title VARCHAR, qid VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE passages_all (src_rank INTEGER, page_id VARCHAR, idx INTEGER, "
                "text VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE mentions_all (src_rank INTEGER, page_id VARCHAR, idx INTEGER, "
                "qid VARCHAR, char_start INTEGER, char_end INTEGER, source VARCHAR)")
    for rank, (name, folder) in enumerate(text_dirs):
        con.execute(f"INSERT INTO docs_all SELECT {rank}, '{name}', page_id::VARCHAR, title, qid "
                    f"FROM {_parquet(folder / 'documents.parquet')}")
        con.execute(f"INSERT INTO passages_all SELECT {rank}, page_id::VARCHAR, idx, text "
                    f"FROM {_parquet(folder / 'passages.parquet')}")
        con.execute(f"INSERT INTO mentions_all SELECT {rank}, page_id::VARCHAR, idx, qid, char_start, char_end, "
                    f"source FROM {_parquet(folder / 'mentions.parquet')}")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE doc_ids AS
        SELECT (row_number() OVER (ORDER BY src_rank, try_cast(page_id AS BIGINT) NULLS LAST, page_id) - 1)::INTEGER
                   AS doc_id, src_rank, source, page_id, title, qid
        FROM (SELECT *, row_number() OVER (PARTITION BY src_rank, page_id) AS k FROM docs_all) WHERE k = 1""")
    con.execute("""
        INSERT INTO documents
        SELECT d.doc_id, d.title, i.entity_id, d.source, d.page_id
        FROM doc_ids d LEFT JOIN items i ON i.qid = d.qid ORDER BY d.doc_id""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE passage_ids AS
        SELECT (row_number() OVER (ORDER BY d.doc_id, p.idx) - 1)::INTEGER AS passage_id, d.doc_id,
               p.src_rank, p.page_id, p.idx, p.text
        FROM passages_all p JOIN doc_ids d USING (src_rank, page_id)""")
    con.execute("INSERT INTO passages SELECT passage_id, doc_id, idx, text FROM passage_ids ORDER BY passage_id")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE mentions_resolved AS
        SELECT p.passage_id, i.entity_id, m.*
        FROM mentions_all m
        LEFT JOIN passage_ids p USING (src_rank, page_id, idx)
        LEFT JOIN items i ON i.qid = m.qid""")
    _reject(con, f"""
        SELECT 'assemble', NULL, page_id || ':' || idx || ':' || char_start,
               CASE WHEN passage_id IS NULL THEN 'mention_without_passage' ELSE 'mention_unknown_entity' END,
               left(qid, {REJECT_RAW_CHARS}), 'dropped'
        FROM mentions_resolved WHERE passage_id IS NULL OR entity_id IS NULL""")
    stats["mentions_unknown_entity"] = _count(
        con, "SELECT count(*) FROM mentions_resolved WHERE entity_id IS NULL")
    con.execute("""
        INSERT INTO mentions
        SELECT passage_id, entity_id, char_start, char_end, source FROM mentions_resolved
        WHERE passage_id IS NOT NULL AND entity_id IS NOT NULL
        ORDER BY passage_id, char_start""")
    for table in ("documents", "passages", "mentions"):
        stats[table] = _count(con, f"SELECT count(*) FROM {table}")


def _load_descriptions(con: duckdb.DuckDBPyConnection, text_dirs: list[tuple[str, Path]], stats: dict) -> None:
    con.execute("""
        CREATE OR REPLACE TEMP TABLE leads AS
        SELECT i.entity_id, arg_min(p.text, p.doc_id) AS lead
        FROM passage_ids p JOIN doc_ids d USING (doc_id) JOIN items i ON i.qid = d.qid
        WHERE p.idx = 0 AND length(trim(p.text)) > 0
        GROUP BY i.entity_id""")
    con.execute(f"CREATE OR REPLACE TEMP TABLE described AS {choose_descriptions_sql('items', 'leads')}")
    # names to find in a description: label, aliases, the article title and the redirect titles pointing to
    # it (the bold name of a Wikipedia lead is often a redirect: 'Louis IX of Hesse-Darmstadt' for Q213610)
    redirects = [folder / "redirects.parquet" for _, folder in text_dirs if _exists(folder / "redirects.parquet")]
    redirect_names = "".join(
        f" UNION SELECT i.entity_id, r.title FROM {_parquet(path)} r JOIN items i ON i.enwiki_title = r.target"
        for path in redirects)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE entity_names AS
        SELECT entity_id, label AS name FROM items WHERE label IS NOT NULL
        UNION SELECT entity_id, alias FROM aliases
        UNION SELECT entity_id, enwiki_title FROM items WHERE enwiki_title IS NOT NULL
        {redirect_names}""")
    create_mention_spans(con, "described", "entity_names")
    for source in ("wikipedia", "wikidata", "label"):
        stats[f"desc_source_{source}"] = _count(
            con, f"SELECT count(*) FROM described WHERE desc_source = '{source}'")
    stats["entities_without_text"] = _count(con, "SELECT count(*) FROM described WHERE description IS NULL")
    stats["desc_with_mention_span"] = _count(con, "SELECT count(*) FROM desc_spans")


def _load_entities_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        INSERT INTO entities
        SELECT i.entity_id, i.qid, i.label, d.description, d.desc_source,
               s.desc_mention_start, s.desc_mention_end, c.category_id
        FROM items i
        JOIN described d USING (entity_id)
        LEFT JOIN desc_spans s USING (entity_id)
        LEFT JOIN entity_category c USING (entity_id)
        ORDER BY i.entity_id""")


def _load_rejects(con: duckdb.DuckDBPyConnection, stage_dirs: list[Path]) -> None:
    for folder in stage_dirs:
        path = Path(folder) / "rejects.parquet"
        if _exists(path):
            con.execute(f"INSERT INTO rejects BY NAME SELECT * FROM {_parquet(path)}")
    con.execute("INSERT INTO rejects SELECT * FROM assemble_rejects")
