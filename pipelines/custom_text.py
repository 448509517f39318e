"""Linked text for a custom / TSV-imported KG: T-REx-shaped corpus files -> documents, passages, mentions.

The corpus stage (`pipelines.trex.parse_trex`) runs unchanged; its Parquet outputs are then re-keyed to the
store's dense ids by the same SQL as the Wikidata build (`pipelines.assemble`), joining mentions on
`entities.qid` (the custom KG's own ids, QIDs when the corpus is linked to Wikidata). Mentions of entities
the KG does not have are rejected ('mention_unknown_entity', counted), never silently dropped.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from kg_store import store
from pipelines.assemble import load_text
from pipelines.trex import parse_trex


def parse_corpora(corpora: list[Path], work: Path) -> list[tuple[str, Path]]:
    """Run the corpus stage for every file into WORK/corpus-<i>; returns (name, folder) pairs."""
    dirs = []
    for i, path in enumerate(corpora):
        folder = Path(work) / f"corpus-{i}"
        parse_trex(path, folder)
        dirs.append((f"corpus:{Path(path).name}", folder))
    return dirs


def add_linked_text(con: duckdb.DuckDBPyConnection, text_dirs: list[tuple[str, Path]]) -> dict:
    """Append the stage outputs in `text_dirs` to the (entity-filled) store behind `con`, in one transaction."""
    stats: dict[str, int] = {}
    con.execute("CREATE OR REPLACE TEMP VIEW items AS SELECT entity_id, qid FROM entities")
    con.execute("CREATE OR REPLACE TEMP TABLE assemble_rejects (stage VARCHAR, source VARCHAR, "
                "position VARCHAR, reason VARCHAR, raw VARCHAR, action VARCHAR)")
    with store.transaction(con):
        load_text(con, text_dirs, stats)
        for _, folder in text_dirs:
            rejects = folder / "rejects.parquet"
            if rejects.exists():
                con.execute("INSERT INTO rejects BY NAME SELECT * FROM read_parquet(?)", [str(rejects)])
        con.execute("INSERT INTO rejects SELECT * FROM assemble_rejects")
    return stats
