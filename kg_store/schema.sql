-- The KG store: one DuckDB file per knowledge graph (DESIGN.md part 2). Dense 0..n-1 integer ids.
-- No PRIMARY KEY / UNIQUE constraints: they build ART indexes that slow bulk loads and cost memory at
-- Wikidata scale; density and referential integrity are checked by kg_store.store.check_integrity instead.
CREATE TABLE IF NOT EXISTS entities (
    entity_id          INTEGER NOT NULL,   -- dense id, 0..n-1
    qid                VARCHAR NOT NULL,   -- Wikidata QID or the custom KG's own id
    label              VARCHAR,
    description        VARCHAR,
    desc_source        VARCHAR,            -- 'wikipedia' | 'wikidata' | 'label' | 'custom'
    desc_mention_start INTEGER,            -- char offset of the entity's first mention in description
    desc_mention_end   INTEGER,            -- end exclusive; NULL when the label/aliases do not occur
    category_id        INTEGER             -- NULL if none
);
CREATE TABLE IF NOT EXISTS aliases (
    entity_id INTEGER NOT NULL,
    alias     VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS relations (
    relation_id INTEGER NOT NULL,
    pid         VARCHAR NOT NULL,
    label       VARCHAR,
    description VARCHAR
);
CREATE TABLE IF NOT EXISTS triples (
    head_id     INTEGER NOT NULL,
    relation_id INTEGER NOT NULL,
    tail_id     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS categories (
    category_id INTEGER NOT NULL,
    qid         VARCHAR,                   -- NULL for the collapsed 'other' class
    label       VARCHAR
);
CREATE TABLE IF NOT EXISTS documents (
    doc_id    INTEGER NOT NULL,
    title     VARCHAR,
    entity_id INTEGER,                     -- NULL if the article's entity is unknown
    source    VARCHAR,                     -- 'wikipedia' | 'corpus' | 'custom'
    source_id VARCHAR                      -- page id / docid in the input
);
CREATE TABLE IF NOT EXISTS passages (
    passage_id INTEGER NOT NULL,
    doc_id     INTEGER NOT NULL,
    idx        INTEGER NOT NULL,           -- position of the passage inside its document
    text       VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mentions (
    passage_id INTEGER NOT NULL,
    entity_id  INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end   INTEGER NOT NULL,           -- end exclusive, Python str (code point) offsets into passages.text
    source     VARCHAR NOT NULL            -- 'anchor' | 'alias' | 'ner' | 'corpus'
);
CREATE TABLE IF NOT EXISTS rejects (
    stage    VARCHAR NOT NULL,             -- pipeline stage that met the problem
    source   VARCHAR,                      -- input file
    position VARCHAR,                      -- line number / byte offset / page title
    reason   VARCHAR NOT NULL,
    raw      VARCHAR,                      -- the offending input, truncated
    action   VARCHAR                       -- 'dropped' | 'kept' (kept with a fallback) | 'repaired'
);
CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR NOT NULL,
    value VARCHAR
);
-- What incremental updates changed (pipelines/update.py): one row per (id, kind of change) per update; the
-- memory refresh (`jaket memory refresh --changed-only`) re-encodes the entities with 'new' or 'description'.
CREATE TABLE IF NOT EXISTS entity_changes (
    entity_id  INTEGER NOT NULL,
    qid        VARCHAR NOT NULL,
    change     VARCHAR NOT NULL,           -- 'new' | 'description' | 'label' | 'category' | 'aliases' |
                                           -- 'triples' | 'removed' | 'restored'
    update_seq INTEGER NOT NULL,           -- 1 for the first update of the store, then 2, ... (meta update_seq)
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS relation_changes (
    relation_id INTEGER NOT NULL,
    pid         VARCHAR NOT NULL,
    change      VARCHAR NOT NULL,          -- 'new' | 'description' | 'removed' | 'restored'
    update_seq  INTEGER NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);
