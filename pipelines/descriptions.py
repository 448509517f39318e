"""Entity descriptions: which text describes an entity, and where the entity is mentioned in it.

Description choice (DESIGN.md part 2): the lead of the entity's Wikipedia article when there is one
('wikipedia'), else "label, Wikidata description" ('wikidata'), else the label ('label').

Mention span: the first occurrence of the label or an alias in the description, case-insensitive, on word
boundaries (so 'US' is not found inside 'business'). The earliest start wins; at the same start, the longest
name. NULL when no name occurs (the training core then uses the [CLS] position, DESIGN.md's position-1 rule).
Done in SQL so that it scales to the full dump without a Python loop.
"""

from __future__ import annotations

import duckdb

MIN_NAME_CHARS = 2


def choose_descriptions_sql(items: str, leads: str) -> str:
    """SELECT over `items(entity_id, label, wd_description)` LEFT JOIN `leads(entity_id, lead)`
    giving (entity_id, description, desc_source)."""
    return f"""
        SELECT i.entity_id,
               CASE WHEN l.lead IS NOT NULL THEN l.lead
                    WHEN i.wd_description IS NOT NULL AND i.label IS NOT NULL
                         THEN i.label || ', ' || i.wd_description
                    WHEN i.wd_description IS NOT NULL THEN i.wd_description
                    ELSE i.label END AS description,
               CASE WHEN l.lead IS NOT NULL THEN 'wikipedia'
                    WHEN i.wd_description IS NOT NULL THEN 'wikidata'
                    WHEN i.label IS NOT NULL THEN 'label' END AS desc_source
        FROM {items} i LEFT JOIN {leads} l USING (entity_id)"""


def create_mention_spans(con: duckdb.DuckDBPyConnection, described: str, names: str,
                         out: str = "desc_spans") -> None:
    """Create temp table `out(entity_id, desc_mention_start, desc_mention_end)` (0-based, end exclusive).

    `described(entity_id, description)`; `names(entity_id, name)` holds each entity's label and aliases.
    """
    # Every non-alphanumeric character becomes a space (same length), both sides get a space of padding, so
    # one strpos finds the first occurrence on word boundaries: 'US' matches ' us ' but not 'business'.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {out} AS
        WITH cand AS (
            SELECT d.entity_id, d.description AS text, n.name, length(n.name) AS len,
                   strpos(' ' || regexp_replace(lower(d.description), '[^[:alnum:]]', ' ', 'g') || ' ',
                          ' ' || regexp_replace(lower(n.name), '[^[:alnum:]]', ' ', 'g') || ' ') - 1 AS s
            FROM {described} d JOIN {names} n USING (entity_id)
            WHERE d.description IS NOT NULL AND length(trim(n.name)) >= {MIN_NAME_CHARS}
        ), ok AS (
            SELECT entity_id, s, s + len AS e, len FROM cand
            -- lower() may change the length of rare characters: keep only spans that slice back to the name
            WHERE s >= 0 AND lower(substr(text, s + 1, len)) = lower(name)
        )
        SELECT entity_id, arg_min(s, s * 100000 - len) AS desc_mention_start,
               arg_min(e, s * 100000 - len) AS desc_mention_end
        FROM ok GROUP BY entity_id""")
