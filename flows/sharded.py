"""The sharded ingestion of `build-kg` (`--shards N`, N > 1): a subflow `ingest-shards` whose task runner is
chosen at run time (in-process threads, or Dask: a LocalCluster or an existing cluster).

Each dump is split into N byte ranges (pipelines/shards.py); every shard is a Prefect task with retries that
writes its own folder `STAGE/shard-NNNN/` and `_SUCCESS` (keyed by the input and its byte range), so a rerun
skips the finished shards. A stage is marked done only when every shard finished; a shard that keeps failing is
logged with its byte range, kept out of the store as a `shard_failed` reject, and named in the ShardsFailed
error that ends the flow, while the other shards' outputs stay on disk for the rerun.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pipelines.dump_io import file_checksum
from pipelines.progress import LOG_EVERY_S, progress
from pipelines.shards import ShardPlan, plan_shards

RETRY_DELAY_S = 1
INDEX_DIR = "_index"


@dataclass
class StageResult:
    stats: dict
    key: str                                   # identity of the stage's output, for the stages after it
    failed: dict[int, str] = field(default_factory=dict)
    plan: ShardPlan | None = None

    def failures(self, stage: str) -> list[str]:
        assert self.plan is not None or not self.failed
        return [f"{stage} {self.plan.shards[i].describe()}: {error}"  # type: ignore[union-attr]
                for i, error in sorted(self.failed.items())]


def make_task_runner(kind: str = "local", workers: int = 1, dask_address: str | None = None) -> TaskRunner:
    """In-process threads (`local`, `workers` at a time), or Dask: an existing cluster at `dask_address`, else
    a LocalCluster of `workers` single-threaded worker processes bound to 127.0.0.1."""
    if kind == "local":
        return ThreadPoolTaskRunner(max_workers=max(1, workers))
    if kind != "dask":
        raise ValueError(f"unknown task runner {kind!r} (local or dask)")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    api_url = os.environ.get("PREFECT_API_URL") or (str(context.client.api_url) if context else None)
    if dask_address:
        if not os.environ.get("PREFECT_API_URL"):
            get_run_logger().warning(
                "--dask-address without PREFECT_API_URL: each Dask worker reports its shards to a temporary Prefect "
                "server of its own; run `prefect server start` and set PREFECT_API_URL for the flow and the workers "
                "(README: Running on a Dask cluster)")
        return DaskTaskRunner(address=dask_address)
    # the workers report to the flow's API (the temporary server of an in-process run included)
    env = {"PREFECT_API_URL": api_url} if api_url else {}
    return DaskTaskRunner(cluster_kwargs={"n_workers": max(1, workers), "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": None, "env": env})


@task(name="wikidata-shard")
def wikidata_shard_task(dump: str, folder: Path, plan: ShardPlan, index: int, key: str, threads: int) -> dict:
    from prefect.runtime import task_run

    from flows.build_kg import run_stage, show_progress_logs
    from pipelines.wikidata_shards import parse_wikidata_shard

    show_progress_logs()
    shard, attempt = plan.shards[index], max(1, task_run.run_count or 1)
    return run_stage(f"wikidata {shard.name}", folder, key, lambda: parse_wikidata_shard(
        dump, folder, plan, shard, threads=threads, attempt=attempt))


@task(name="wikipedia-shard")
def wikipedia_shard_task(xml: str, folder: Path, plan: ShardPlan, index: int, key: str) -> dict:
    from prefect.runtime import task_run

    from flows.build_kg import run_stage, show_progress_logs
    from pipelines.wikipedia_shards import parse_wikipedia_shard

    show_progress_logs()
    shard, attempt = plan.shards[index], max(1, task_run.run_count or 1)
    return run_stage(f"wikipedia {shard.name}", folder, key, lambda: parse_wikipedia_shard(
        xml, folder, plan, shard, attempt=attempt))


@task(name="wikipedia-resolve")
def wikipedia_resolve_task(xml: str, wd_dir: Path, folder: Path, plan: ShardPlan, finished: dict[int, dict],
                           failed: dict[int, str], link: bool) -> tuple[dict, list[tuple[int, int]]]:
    from pipelines.wikipedia_shards import prepare_wikipedia_merge

    return prepare_wikipedia_merge(xml, wd_dir, folder, plan, finished, failed, link=link)


@task(name="wikipedia-link")
def wikipedia_link_task(folder: Path, part: int, seq_range: tuple[int, int], alias_linking: bool,
                        ner: bool) -> dict[str, int]:
    from flows.build_kg import show_progress_logs
    from pipelines.wikipedia_shards import link_wikipedia_range

    show_progress_logs()
    return link_wikipedia_range(folder, part, seq_range, alias_linking, ner)


@task(name="wikipedia-complete")
def wikipedia_complete_task(wd_dir: Path, folder: Path, stats: dict, parts: int, ner: bool) -> dict:
    from pipelines.wikipedia_shards import complete_wikipedia_merge

    return complete_wikipedia_merge(wd_dir, folder, stats, parts, ner)


def _wikipedia_merge(wikipedia: str, wd_dir: Path, wp_dir: Path, plan: ShardPlan, finished: dict[int, dict],
                     failed: dict[int, str], alias_linking: bool, ner: bool, retries: int) -> dict:
    """Pass 2 once, pass 3 (per article) in one task per shard's article range, then the stage's files."""
    link = alias_linking or ner
    stats, ranges = wikipedia_resolve_task.submit(wikipedia, wd_dir, wp_dir, plan, finished, failed, link).result()
    ranges = ranges if link else []
    futures = [wikipedia_link_task.with_options(retries=retries, retry_delay_seconds=RETRY_DELAY_S,
                                                task_run_name=f"wikipedia-link-{part:04d}").submit(
        wp_dir, part, seq_range, alias_linking, ner) for part, seq_range in enumerate(ranges)]
    for future in futures:
        future.result()
    return wikipedia_complete_task.submit(wd_dir, wp_dir, stats, len(ranges), ner).result()


def _done(folder: Path, key: str) -> dict | None:
    marker = folder / "_SUCCESS"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("key") == key:
            return done
    return None


def _mark_done(folder: Path, key: str, stats: dict) -> None:
    tmp = folder / "_SUCCESS.tmp"
    tmp.write_text(json.dumps({"key": key, "stats": stats}, default=str))
    os.replace(tmp, folder / "_SUCCESS")


def _prepare(stage: str, source: str, folder: Path, count: int, threads: int | None) -> ShardPlan | None:
    """Remove what is not a shard of this plan (a one-shard output, stale shards), then plan (builds or reuses
    the seek index). None when the input cannot be indexed (damaged or truncated compressed file): the stage then
    reads it whole, through the reader that keeps everything before the damage."""
    keep = {f"shard-{i:04d}" for i in range(count)} | {INDEX_DIR}
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    logger = get_run_logger()
    t0 = time.perf_counter()
    try:  # the index depends on the input only: a rerun with another shard count reuses it
        plan = plan_shards(source, count, folder / INDEX_DIR, file_checksum(source), threads)
    except Exception as exc:  # noqa: BLE001 - any decoder error: fall back to the one-shard path
        logger.warning("stage %s: %s cannot be split (%s: %s); parsed as one shard", stage, Path(source).name,
                       type(exc).__name__, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    logger.info("stage %s: %d shards of %s (%s decompressed bytes; index ready in %.1fs)", stage, count,
                Path(source).name, f"{plan.size:,}", time.perf_counter() - t0)
    return plan


def _run_shards(stage: str, folder: Path, plan: ShardPlan, futures: list[PrefectFuture],
                retries: int, count_key: str) -> tuple[dict[int, dict], dict[int, str]]:
    """Wait for the shards, with an overall progress line (bytes and entities, rate, ETA)."""
    from pipelines.wikidata_shards import shard_progress

    logger = get_run_logger()
    finished: dict[int, dict] = {}
    failed: dict[int, str] = {}
    pending = list(futures)
    with progress(total=plan.size, desc=f"{stage}: {len(futures)} shards", unit="B", unit_scale=True) as bar:
        while pending:
            done, not_done = wait(pending, timeout=min(5.0, LOG_EVERY_S))
            for future in done:
                index = futures.index(future)
                try:
                    finished[index] = future.result()
                except Exception as exc:  # noqa: BLE001 - the shard's last attempt failed: reported below
                    failed[index] = f"{type(exc).__name__}: {exc}"
                    logger.error("stage %s: %s failed after %d attempt(s): %s", stage,
                                 plan.shards[index].describe(), retries + 1, failed[index])
            pending = list(not_done)
            bytes_done, records = shard_progress(folder, plan, finished, count_key)
            bar.update(bytes_done - bar.n)
            bar.set_postfix({count_key: f"{records:,}", "shards": f"{len(finished)}/{len(futures)}"})
    return finished, failed


def _wikidata_stage(wikidata: str, wd_dir: Path, wd_key: str, count: int, retries: int,
                    threads: int) -> StageResult:
    from flows.build_kg import _key, wikidata_task
    from pipelines.wikidata_shards import merge_wikidata_shards

    logger = get_run_logger()
    done = _done(wd_dir, wd_key)
    if done is not None:
        logger.info("stage wikidata: up to date (%d shards), skipped", count)
        return StageResult(done["stats"], wd_key)
    plan = _prepare("wikidata", wikidata, wd_dir, count, threads)
    if plan is None:
        return StageResult(wikidata_task(wikidata, wd_dir, wd_key, None), wd_key)
    futures = [wikidata_shard_task.with_options(
        retries=retries, retry_delay_seconds=RETRY_DELAY_S, task_run_name=f"wikidata-{shard.name}").submit(
        wikidata, wd_dir / shard.name, plan, shard.index, _key({"stage": wd_key, "shard": shard.as_dict()}),
        threads) for shard in plan.shards]
    finished, failed = _run_shards("wikidata", wd_dir, plan, futures, retries, "entities")
    stats = merge_wikidata_shards(wd_dir, plan, finished, failed)
    if not failed:
        _mark_done(wd_dir, wd_key, stats)
    logger.info("stage wikidata: %d shards merged: %s entities, %s claims, %s rejects", count,
                stats.get("entities"), stats.get("claims"), stats.get("rejects"))
    # the stages after it see a different input while shards are missing
    return StageResult(stats, wd_key if not failed else _key({"stage": wd_key, "failed": sorted(failed)}),
                       failed, plan)


@flow(name="ingest-shards")
def ingest_shards(wikidata: str, wd_dir: Path, wd_key: str, count: int, retries: int, threads: int,
                  wikipedia: str | None = None, wp_dir: Path | None = None, wp_key: str | None = None,
                  wp_input_key: str | None = None, alias_linking: bool = True, ner: bool = False) -> dict[str, Any]:
    """The wikidata stage (and the wikipedia stage, when given) in `count` shards each."""
    from flows.build_kg import _key, show_progress_logs

    logger = get_run_logger()
    show_progress_logs()
    results: dict[str, Any] = {"wikidata": _wikidata_stage(wikidata, wd_dir, wd_key, count, retries, threads)}
    if wikipedia is None:
        return results
    assert wp_dir is not None and wp_key is not None and wp_input_key is not None
    wp_key = _key({"stage": wp_key, "wd": results["wikidata"].key})
    wp = _done(wp_dir, wp_key)
    if wp is not None:
        logger.info("stage wikipedia: up to date (%d shards), skipped", count)
        results["wikipedia"] = StageResult(wp["stats"], wp_key)
        return results
    plan = _prepare("wikipedia", wikipedia, wp_dir, count, threads)
    if plan is None:
        from flows.build_kg import wikipedia_task

        stats = wikipedia_task(wikipedia, wd_dir, wp_dir, wp_key, alias_linking, ner)
        results["wikipedia"] = StageResult(stats, wp_key)
        return results
    futures = [wikipedia_shard_task.with_options(
        retries=retries, retry_delay_seconds=RETRY_DELAY_S, task_run_name=f"wikipedia-{shard.name}").submit(
        wikipedia, wp_dir / shard.name, plan, shard.index, _key({"in": wp_input_key, "shard": shard.as_dict()}))
        for shard in plan.shards]
    finished, failed = _run_shards("wikipedia", wp_dir, plan, futures, retries, "articles")
    stats = _wikipedia_merge(wikipedia, wd_dir, wp_dir, plan, finished, failed, alias_linking, ner, retries)
    if not failed:
        _mark_done(wp_dir, wp_key, stats)
    results["wikipedia"] = StageResult(stats, wp_key, failed, plan)
    return results
