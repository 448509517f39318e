"""The Prefect flow `build-kg`: dumps -> stage outputs -> the store, resumable and swapped in atomically.

Each stage runs as a Prefect task over a pure function of `pipelines/`. A stage's folder in the work dir
gets `_SUCCESS` (with the key of its inputs) only when it finished; a rerun skips every stage whose key
matches, so a build that died in stage 3 restarts at stage 3. The store is written to a temporary file and
renamed over the old one at the end, so a reader never sees a half-built store.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from kg_store import store
from pipelines import dump_io
from pipelines.assemble import AssembleOptions, assemble

PIPELINE_VERSION = "1"   # bump when a stage's output format or logic changes: invalidates finished stages


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def run_stage(name: str, folder: Path, key: str, fn: Callable[[], dict]) -> dict:
    """Run `fn` into `folder` unless `folder/_SUCCESS` holds the same key; returns the stage's stats."""
    logger = get_run_logger()
    marker = folder / "_SUCCESS"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("key") == key:
            logger.info("stage %s: up to date (finished %s), skipped", name, done.get("finished"))
            return done.get("stats", {})
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    logger.info("stage %s: started", name)
    t0 = time.perf_counter()
    stats = fn() or {}
    seconds = round(time.perf_counter() - t0, 3)
    stats.setdefault("seconds", seconds)
    tmp = folder / "_SUCCESS.tmp"
    tmp.write_text(json.dumps({"key": key, "stats": stats, "seconds": seconds,
                               "finished": datetime.now(UTC).isoformat(timespec="seconds")}, default=str))
    os.replace(tmp, marker)
    logger.info("stage %s: finished in %.1fs: %s", name, seconds, _summary(stats))
    return stats


def show_progress_logs() -> None:
    """Let the INFO lines of `pipelines` and `jaket` (progress: rate, ETA) through Prefect's logging, whose root
    level (WARNING) would drop them; called in the flows and in tasks that may run in Dask workers."""
    import logging

    for name in ("pipelines", "jaket"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)


def _summary(stats: dict) -> str:
    keys = [k for k, v in stats.items() if isinstance(v, (int, float))][:8]
    return ", ".join(f"{k}={stats[k]}" for k in keys)


@task(name="wikidata")
def wikidata_task(dump: str, folder: Path, key: str, threads: int | None) -> dict:
    from pipelines.wikidata import parse_wikidata

    return run_stage("wikidata", folder, key, lambda: parse_wikidata(dump, folder, threads=threads))


@task(name="wikipedia")
def wikipedia_task(xml: str, wikidata_dir: Path, folder: Path, key: str, alias_linking: bool,
                   ner: bool) -> dict:
    from pipelines.wikipedia import parse_wikipedia

    return run_stage("wikipedia", folder, key, lambda: parse_wikipedia(
        xml, wikidata_dir, folder, alias_linking=alias_linking, ner=ner))


@task(name="corpus")
def corpus_task(path: str, folder: Path, key: str) -> dict:
    from pipelines.trex import parse_trex

    return run_stage("corpus", folder, key, lambda: parse_trex(path, folder))


def run_corpus_stages(corpus: list[str], work: Path, checksums: dict[str, str], stage_stats: dict,
                      text_dirs: list[tuple[str, Path]]) -> None:
    """The corpus stage of each T-REx-shaped file (a task each, skipped when up to date); appends its stats and
    its output folder."""
    for i, path in enumerate(corpus):
        c_dir = work / f"corpus{i}"
        c_key = _key({"v": PIPELINE_VERSION, "in": checksums[str(Path(path).resolve())]})
        stage_stats[f"corpus{i}"] = corpus_task(path, c_dir, c_key)
        text_dirs.append(("corpus", c_dir))


@task(name="assemble")
def assemble_task(out: Path, wikidata_dir: Path, text_dirs: list[tuple[str, Path]], options: dict,
                  meta: dict) -> dict:
    logger = get_run_logger()
    logger.info("stage assemble: writing %s (atomic swap at the end)", out)
    with store.atomic_store(out) as con:
        stats = assemble(con, wikidata_dir, AssembleOptions(text_dirs=text_dirs, **options))
        problems = store.check_integrity(con)
        if problems:
            raise RuntimeError("store integrity check failed: " + "; ".join(problems))
        rejects = dict(con.execute("SELECT reason, count(*) FROM rejects GROUP BY ALL").fetchall())
        meta = {**meta, "assemble": stats, "rejects_by_reason": rejects,
                "finished": datetime.now(UTC).isoformat(timespec="seconds")}
        store.set_meta(con, {**{k: v for k, v in stats.items()}, **meta})
    logger.info("stage assemble: done: %s", _summary(stats))
    if rejects:
        logger.info("rejects by reason: %s", rejects)
    return stats


def check_inputs(wikidata: str, wikipedia: str | None, corpus: list[str]) -> dict[str, str]:
    """Checksums of every input; a missing one raises InputMissing before anything is written."""
    paths = [wikidata] + ([wikipedia] if wikipedia else []) + list(corpus)
    return {str(Path(p).resolve()): dump_io.file_checksum(p) for p in paths}


@flow(name="build-kg", log_prints=True)
def build_kg(wikidata: str, out: str = "kg_store/wiki.duckdb", wikipedia: str | None = None,
             corpus: list[str] | None = None, top_categories: int = 100, category_other: bool = False,
             alias_linking: bool = True, ner: bool = False, work_dir: str | None = None,
             clean_work: bool = False, threads: int | None = None, shards: int | None = None,
             task_runner: str = "local", workers: int = 1, dask_address: str | None = None,
             shard_retries: int = 2) -> dict:
    """Build (or resume building) the KG store `out` from a Wikidata dump, optional Wikipedia pages and
    already-linked corpora. `shards` > 1 parses each dump in that many byte ranges in parallel (flows/sharded.py)
    on `task_runner` ('local' threads or 'dask'); default: 1, or 4 per worker with Dask."""
    logger = get_run_logger()
    show_progress_logs()
    shards = shards or (1 if task_runner == "local" else 4 * max(1, workers))
    failures: list[str] = []
    corpus = list(corpus or [])
    checksums = check_inputs(wikidata, wikipedia, corpus)
    out_path = Path(out)
    work = Path(work_dir) if work_dir else out_path.with_name(out_path.name + ".work")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with store.writer_lock(out_path):
        wd_key = _key({"v": PIPELINE_VERSION, "in": checksums[str(Path(wikidata).resolve())]})
        wd_dir = work / "wikidata"
        text_dirs: list[tuple[str, Path]] = []
        wp_dir = work / "wikipedia"
        wp_input = checksums[str(Path(wikipedia).resolve())] if wikipedia else None
        if shards > 1:
            from flows.sharded import ingest_shards, make_task_runner

            runner = make_task_runner(task_runner, workers, dask_address)
            per_shard = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
            sharded = ingest_shards.with_options(task_runner=runner)(
                wikidata, wd_dir, _key({"v": PIPELINE_VERSION, "in": wd_key, "shards": shards}), shards,
                shard_retries, per_shard, wikipedia, wp_dir,
                _key({"v": PIPELINE_VERSION, "in": wp_input, "alias": alias_linking, "ner": ner}),
                _key({"v": PIPELINE_VERSION, "in": wp_input}), alias_linking, ner)
            stage_stats = {name: result.stats for name, result in sharded.items()}
            failures = [line for name, result in sharded.items() for line in result.failures(name)]
        else:
            stage_stats = {"wikidata": wikidata_task(wikidata, wd_dir, wd_key, threads)}
        if wikipedia:
            wp_key = _key({"v": PIPELINE_VERSION, "in": wp_input, "wd": wd_key, "alias": alias_linking, "ner": ner})
            if shards <= 1:
                stage_stats["wikipedia"] = wikipedia_task(wikipedia, wd_dir, wp_dir, wp_key, alias_linking, ner)
            text_dirs.append(("wikipedia", wp_dir))
        run_corpus_stages(corpus, work, checksums, stage_stats, text_dirs)
        meta = {
            "schema_version": store.SCHEMA_VERSION, "pipeline_version": PIPELINE_VERSION,
            "inputs": {"wikidata": wikidata, "wikipedia": wikipedia, "corpus": corpus},
            "input_checksums": checksums, "stages": stage_stats, "started": started,
            "options": {"top_categories": top_categories, "category_other": category_other,
                        "alias_linking": alias_linking, "ner": ner, "shards": shards},
            "versions": _versions(),
        }
        stats = assemble_task(out_path, wd_dir, text_dirs,
                              {"top_categories": top_categories, "category_other": category_other}, meta)
    if failures:
        from pipelines.shards import ShardsFailed

        logger.error("%d shard(s) failed: %s", len(failures), "; ".join(failures))
        raise ShardsFailed(f"{len(failures)} shard(s) kept failing and are missing from {out_path} (rejects "
                           f"reason 'shard_failed'); rerun the same command to redo only them: "
                           + "; ".join(failures))
    if clean_work:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("store ready: %s", out_path)
    return stats


def _versions() -> dict[str, str]:
    import duckdb
    import polars

    return {"python": platform.python_version(), "duckdb": duckdb.__version__, "polars": polars.__version__}
