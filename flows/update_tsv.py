"""`jaket kg update`: apply TSV files of changed entities / triples to a store in place (atomic, locked).

The dump path of incremental updates is the Prefect flow `update-kg` (`jaket-build-kg ... --update STORE`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from kg_store import store
from pipelines.dump_io import InputMissing, require_file
from pipelines.update_tsv import update_from_tsv


def update_store_from_tsv(kg: str | Path, work_dir: str | Path | None = None, header: bool | None = None,
                          **files: str | Path | None) -> dict:
    """Lock the store, apply the change files (see pipelines/update_tsv.py), swap the result in atomically."""
    kg = Path(kg)
    if not kg.is_file():
        raise store.StoreNotFound(f"store not found: {kg}")
    paths = {k: require_file(v) for k, v in files.items() if v}
    if not paths:
        raise click.UsageError("nothing to apply: give --entities-tsv, --triples-tsv or a removal file")
    work = Path(work_dir) if work_dir else kg.with_name(kg.name + ".work")
    with store.writer_lock(kg):
        return update_from_tsv(kg, work, header=header, **paths)


@click.command(name="update")
@click.option("--kg", "kg_path", required=True, help="the store to update in place")
@click.option("--entities-tsv", default=None, help="changed or new entities: id, label, description[, category]")
@click.option("--triples-tsv", default=None,
              help="head, relation, tail: the complete new outgoing triples of every head it names")
@click.option("--relations-tsv", default=None, help="changed or new relations: id, label[, description]")
@click.option("--aliases-tsv", default=None, help="id, alias: the complete new aliases of every entity it names")
@click.option("--remove-entities", default=None, help="ids of entities to remove (one per line)")
@click.option("--remove-triples", default=None, help="head, relation, tail: triples to remove")
@click.option("--header/--no-header", default=None, help="first line is a header (default: detect)")
@click.option("--work-dir", default=None, help="scratch folder (default: STORE.work beside the store)")
def update_command(kg_path: str, entities_tsv: str | None, triples_tsv: str | None, relations_tsv: str | None,
                   aliases_tsv: str | None, remove_entities: str | None, remove_triples: str | None,
                   header: bool | None, work_dir: str | None) -> None:
    """Update a store in place from TSV files of changes: unchanged entities keep their ids, new ones are
    appended, removed ones stay as tombstones; `entity_changes` records what changed (for `jaket memory
    refresh --changed-only`)."""
    try:
        stats = update_store_from_tsv(kg_path, work_dir, header, entities=entities_tsv, triples=triples_tsv,
                                      relations=relations_tsv, aliases=aliases_tsv,
                                      remove_entities=remove_entities, remove_triples=remove_triples)
    except (InputMissing, store.StoreError) as exc:
        click.echo(f"jaket kg update: error: {exc}", err=True)
        sys.exit(2)
    click.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
