"""The Prefect flow `update-kg`: newer dumps -> stage outputs -> the existing store updated in place.

`jaket-build-kg --wikidata NEW.json.bz2 [--wikipedia ...] [--corpus ...] --update STORE`. The stages are the
build's own tasks (same work folder, same skip-by-input-checksum markers, so a crashed update resumes); the
last task assembles the new data into a snapshot and merges it into STORE keeping every existing dense id
(`pipelines.update`), written to a temporary file and swapped in with one rename. Assembly options default to
the ones STORE was built with (its meta), so the result equals a from-scratch build up to id assignment.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from prefect import flow, get_run_logger, task

from flows.build_kg import (
    PIPELINE_VERSION,
    _key,
    _versions,
    check_inputs,
    run_corpus_stages,
    wikidata_task,
    wikipedia_task,
)
from kg_store import store
from pipelines.assemble import AssembleOptions
from pipelines.dump_io import InputMissing
from pipelines.update import update_from_stages

OPTION_NAMES = ("top_categories", "category_other", "alias_linking", "ner")
DEFAULT_OPTIONS = {"top_categories": 100, "category_other": False, "alias_linking": True, "ner": False}


def store_options(path: str | Path) -> dict:
    """The build options recorded in the store's meta (defaults where a store has none)."""
    with store.KGStore(path) as s:
        recorded = s.meta().get("options")
    options = dict(DEFAULT_OPTIONS)
    if recorded:
        options.update({k: v for k, v in json.loads(recorded).items() if k in OPTION_NAMES})
    return options


def _progress_logs() -> None:
    """Let the INFO progress lines of `pipelines` / `jaket` (rate, ETA) through Prefect's logging (root WARNING)."""
    for name in ("pipelines", "jaket"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)


@task(name="update")
def update_task(store_path: Path, wikidata_dir: Path, text_dirs: list[tuple[str, Path]], options: dict,
                work: Path, meta: dict) -> dict:
    logger = get_run_logger()
    _progress_logs()
    logger.info("stage update: merging the new data into %s (atomic swap at the end)", store_path)
    stats = update_from_stages(store_path, wikidata_dir, AssembleOptions(text_dirs=text_dirs, **options), work,
                               meta={**meta, "finished": datetime.now(UTC).isoformat(timespec="seconds")})
    logger.info("stage update: done: update_seq=%s, entities %s -> %s, entity changes %s, relation changes %s, "
                "memory rows to re-encode %s", stats["update_seq"], stats["entities_before"], stats["entities"],
                stats["entity_changes"], stats["relation_changes"], stats["memory_stale"])
    return stats


@flow(name="update-kg", log_prints=True)
def update_kg(store_path: str, wikidata: str, wikipedia: str | None = None, corpus: list[str] | None = None,
              options: dict | None = None, work_dir: str | None = None, clean_work: bool = False,
              threads: int | None = None) -> dict:
    """Update the store `store_path` in place from newer dumps (same inputs as `build-kg`). `options`
    (top_categories, category_other, alias_linking, ner) default to those the store was built with."""
    logger = get_run_logger()
    _progress_logs()
    corpus = list(corpus or [])
    out = Path(store_path)
    if not out.is_file():
        raise store.StoreNotFound(f"store not found: {out}")
    checksums = check_inputs(wikidata, wikipedia, corpus)
    opts = {**store_options(out), **(options or {})}
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with store.writer_lock(out):
        wd_key = _key({"v": PIPELINE_VERSION, "in": checksums[str(Path(wikidata).resolve())]})
        wd_dir = work / "wikidata"
        stage_stats = {"wikidata": wikidata_task(wikidata, wd_dir, wd_key, threads)}
        text_dirs: list[tuple[str, Path]] = []
        if wikipedia:
            wp_dir = work / "wikipedia"
            wp_key = _key({"v": PIPELINE_VERSION, "in": checksums[str(Path(wikipedia).resolve())],
                           "wd": wd_key, "alias": opts["alias_linking"], "ner": opts["ner"]})
            stage_stats["wikipedia"] = wikipedia_task(wikipedia, wd_dir, wp_dir, wp_key, opts["alias_linking"],
                                                      opts["ner"])
            text_dirs.append(("wikipedia", wp_dir))
        run_corpus_stages(corpus, work, checksums, stage_stats, text_dirs)
        meta = {"schema_version": store.SCHEMA_VERSION, "pipeline_version": PIPELINE_VERSION,
                "inputs": {"wikidata": wikidata, "wikipedia": wikipedia, "corpus": corpus},
                "input_checksums": checksums, "stages": stage_stats, "started": started, "options": opts,
                "versions": _versions()}
        stats = update_task(out, wd_dir, text_dirs,
                            {"top_categories": opts["top_categories"], "category_other": opts["category_other"]},
                            work, meta)
    if clean_work:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("store updated: %s", out)
    return stats


def update_from_cli(update: str, wikidata: str, wikipedia: str | None, corpus: list[str], work_dir: str | None,
                    clean_work: bool, threads: int | None) -> None:
    """`jaket-build-kg ... --update STORE`: the build's options given explicitly on the command line override
    the store's; `--out` may only name STORE itself."""
    ctx = click.get_current_context()
    explicit = {name: ctx.params[name] for name in (*OPTION_NAMES, "out")
                if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    if "out" in explicit and Path(explicit.pop("out")).resolve() != Path(update).resolve():
        raise click.UsageError("--update STORE updates STORE in place: leave out --out (or give the same path)")
    try:  # fail in one line, before Prefect starts and before anything is written
        if not Path(update).is_file():
            raise store.StoreNotFound(f"store not found: {update}")
        check_inputs(wikidata, wikipedia, corpus)
        with store.writer_lock(update):
            pass
        stats = update_kg(store_path=update, wikidata=wikidata, wikipedia=wikipedia, corpus=corpus,
                          options=explicit, work_dir=work_dir, clean_work=clean_work, threads=threads)
    except (InputMissing, store.StoreError) as exc:
        click.echo(f"jaket-build-kg: error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"store updated: {update} (update {stats['update_seq']}: entity changes "
               f"{json.dumps(stats['entity_changes'])}, {stats['memory_stale']} memory rows to re-encode)")
