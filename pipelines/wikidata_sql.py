"""DuckDB SQL of the wikidata stage: one NDJSON chunk -> a `chunk` table -> items/properties/aliases/claims.

Columns are typed explicitly (no schema inference over nested entities). Structs stand where real dumps may
write an empty object as `[]` (`"sitelinks": []`): with ignore_errors such a value reads as NULL, whereas a
line that is not JSON at all reads as a row of NULLs, which the caller finds and re-examines.
"""

from __future__ import annotations

_VALUE = 'STRUCT("entity-type" VARCHAR, "numeric-id" BIGINT, id VARCHAR)'
_SNAK = f"STRUCT(snaktype VARCHAR, property VARCHAR, datatype VARCHAR, datavalue STRUCT(value {_VALUE}))"
_TERM = "STRUCT(en STRUCT(value VARCHAR))"

COLUMNS = {
    "type": "VARCHAR",
    "id": "VARCHAR",
    "datatype": "VARCHAR",
    "labels": _TERM,
    "descriptions": _TERM,
    "aliases": "STRUCT(en STRUCT(value VARCHAR)[])",
    "sitelinks": "STRUCT(enwiki STRUCT(title VARCHAR))",
    "claims": f"MAP(VARCHAR, STRUCT(mainsnak {_SNAK}, rank VARCHAR)[])",
}

_IS_ITEM_VALUED = (
    "lambda s: coalesce(s.mainsnak.datatype = 'wikibase-item', "
    "s.mainsnak.datavalue.value.\"entity-type\" = 'item', false)"
)
_TAIL = "coalesce(s.mainsnak.datavalue.value.id, 'Q' || s.mainsnak.datavalue.value.\"numeric-id\")"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def load_chunk(path: str, max_object_bytes: int) -> str:
    """CREATE the `chunk` table (one row per non-blank line, in file order) from an NDJSON file."""
    columns = "{" + ", ".join(f"{_sql_string(k)}: {_sql_string(v)}" for k, v in COLUMNS.items()) + "}"
    return f"""
CREATE OR REPLACE TEMP TABLE chunk AS
WITH raw AS (
  SELECT type, id, datatype, labels, descriptions, aliases, sitelinks,
         list_filter(flatten(map_values(claims)), {_IS_ITEM_VALUED}) AS st
  FROM read_json({_sql_string(path)}, format = 'newline_delimited', records = true, ignore_errors = true,
                 maximum_object_size = {int(max_object_bytes)}, columns = {columns})
)
SELECT type, id, datatype,
       labels.en.value AS label,
       descriptions.en.value AS description,
       list_filter(list_transform(aliases.en, lambda a: a.value), lambda v: v IS NOT NULL) AS aliases,
       sitelinks.enwiki.title AS enwiki_title,
       list_filter(
         list_transform(
           list_filter(st, lambda s: s.rank IS DISTINCT FROM 'deprecated' AND s.mainsnak.snaktype = 'value'),
           lambda s: {{'pid': s.mainsnak.property, 'tail': {_TAIL}}}),
         lambda t: t.tail IS NOT NULL) AS triples,
       len(list_filter(st, lambda s: s.rank = 'deprecated')) AS n_deprecated,
       len(list_filter(st, lambda s: s.rank IS DISTINCT FROM 'deprecated'
                                    AND s.mainsnak.snaktype IS DISTINCT FROM 'value')) AS n_nonvalue
FROM raw
"""


VALID = "id IS NOT NULL AND type IN ('item', 'property')"

ITEMS = "SELECT id AS qid, label, description, enwiki_title FROM chunk WHERE type = 'item' AND id IS NOT NULL"
PROPERTIES = (
    "SELECT id AS pid, label, description, datatype FROM chunk WHERE type = 'property' AND id IS NOT NULL"
)
ALIASES = f"SELECT id AS qid, unnest(aliases) AS alias FROM chunk WHERE {VALID} AND len(aliases) > 0"
CLAIMS = """
SELECT id AS head_qid, t.pid AS pid, t.tail AS tail_qid
FROM (SELECT id, unnest(triples) AS t FROM chunk WHERE type = 'item' AND id IS NOT NULL AND len(triples) > 0)
"""

COUNTS = f"""
SELECT count(*) AS n_rows,
       count(*) FILTER (type = 'item' AND id IS NOT NULL) AS items,
       count(*) FILTER (type = 'property' AND id IS NOT NULL) AS properties,
       count(*) FILTER (type = 'item' AND id IS NOT NULL AND label IS NOT NULL) AS items_with_en_label,
       count(*) FILTER (type = 'item' AND id IS NOT NULL AND description IS NOT NULL) AS items_with_en_description,
       count(*) FILTER (type = 'item' AND id IS NOT NULL AND len(aliases) > 0) AS items_with_en_aliases,
       count(*) FILTER (type = 'item' AND id IS NOT NULL AND enwiki_title IS NOT NULL) AS items_with_enwiki,
       coalesce(sum(len(aliases)) FILTER ({VALID}), 0) AS aliases,
       coalesce(sum(len(triples)) FILTER (type = 'item' AND id IS NOT NULL), 0) AS claims,
       coalesce(sum(n_deprecated) FILTER (type = 'item' AND id IS NOT NULL), 0) AS deprecated_skipped,
       coalesce(sum(n_nonvalue) FILTER (type = 'item' AND id IS NOT NULL), 0) AS novalue_somevalue_skipped
FROM chunk
"""

# rows to look at again: not parsed / not an entity (re-read with orjson), or without an English label
ATTENTION = f"""
SELECT rowid, ({VALID}) AS valid FROM chunk WHERE NOT coalesce({VALID}, false) OR label IS NULL ORDER BY rowid
"""
