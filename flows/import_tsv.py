"""`jaket kg import-tsv`: a custom / unseen KG from TSV files into its own store (atomic, locked)."""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from kg_store import store
from pipelines.custom_kg import import_tsv as import_tsv_tables
from pipelines.custom_text import add_linked_text, parse_corpora
from pipelines.dump_io import InputMissing, file_checksum


def build_from_tsv(out: str | Path, entities: str | Path, triples: str | Path, relations: str | Path | None = None,
                   aliases: str | Path | None = None, header: bool | None = None,
                   add_missing_entities: bool = False, corpus: list[str | Path] | None = None) -> dict:
    """Build store `out` from TSV files (+ linked text in the T-REx shape, `corpus`); returns the import
    counts (also written to `meta`)."""
    inputs = {"entities": entities, "triples": triples, "relations": relations, "aliases": aliases}
    inputs.update({f"corpus{i}": c for i, c in enumerate(corpus or [])})
    checksums = {k: file_checksum(v) for k, v in inputs.items() if v}
    work = Path(f"{out}.work") / "import-tsv"
    with store.writer_lock(out), store.atomic_store(out) as con:
        stats = import_tsv_tables(con, Path(entities), Path(triples), Path(relations) if relations else None,
                                  Path(aliases) if aliases else None, header, add_missing_entities)
        if corpus:
            text_dirs = parse_corpora([Path(c) for c in corpus], work)
            stats.update(add_linked_text(con, text_dirs))
        problems = store.check_integrity(con)
        if problems:
            raise RuntimeError("store integrity check failed: " + "; ".join(problems))
        rejects = dict(con.execute("SELECT reason, count(*) FROM rejects GROUP BY ALL").fetchall())
        store.set_meta(con, {**stats, "schema_version": store.SCHEMA_VERSION, "source": "import-tsv",
                             "inputs": {k: str(v) for k, v in inputs.items() if v}, "input_checksums": checksums,
                             "rejects_by_reason": rejects,
                             "finished": datetime.now(UTC).isoformat(timespec="seconds")})
    shutil.rmtree(work, ignore_errors=True)
    return stats


@click.command(name="import-tsv")
@click.option("--entities", required=True, help="E.tsv: id, label, description[, category]")
@click.option("--triples", required=True, help="T.tsv: head, relation, tail")
@click.option("--relations", default=None, help="R.tsv: id, label[, description]")
@click.option("--aliases", default=None, help="A.tsv: id, alias")
@click.option("--header/--no-header", default=None, help="first line is a header (default: detect)")
@click.option("--add-missing-entities", is_flag=True,
              help="entities named only in T.tsv become entities (label = id) instead of dangling rejects")
@click.option("--corpus", multiple=True, help="linked text in the T-REx JSON shape, mentions keyed by the "
              "entities' ids (repeatable)")
@click.option("--out", required=True, help="the store to write")
def import_tsv(entities: str, triples: str, relations: str | None, aliases: str | None, header: bool | None,
               add_missing_entities: bool, corpus: tuple[str, ...], out: str) -> None:
    """Import a custom KG (entities with descriptions + triples) into its own store."""
    try:
        stats = build_from_tsv(out, entities, triples, relations, aliases, header, add_missing_entities,
                               list(corpus))
    except (InputMissing, store.StoreError) as exc:
        click.echo(f"jaket kg import-tsv: error: {exc}", err=True)
        sys.exit(2)
    click.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())


@click.command(name="build-corpus-kg")
@click.option("--data", default="../shared/data", show_default=True, help="the shared data folder")
@click.option("--out", default="kg_store/corpus.duckdb", show_default=True, help="the store to write")
def build_corpus_kg_command(data: str, out: str) -> None:
    """Pretraining store from the linked corpora (LAMA T-REx sentences + T-REx sample), see pipelines/corpus_kg."""
    from pipelines.corpus_kg import build_corpus_kg

    try:
        stats = build_corpus_kg(data, out)
    except (InputMissing, store.StoreError, FileNotFoundError) as exc:
        click.echo(f"jaket kg build-corpus-kg: error: {exc}", err=True)
        sys.exit(2)
    click.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
