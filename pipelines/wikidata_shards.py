"""The `wikidata` stage in shards: each shard parses its byte range of the dump into its own folder
(`shard-NNNN/`: the files of pipelines/README.md, rejects with line numbers counted from the shard's first
line); `merge_wikidata_shards` then writes the stage's `rejects.parquet` with line numbers of the whole dump
(and one `shard_failed` row per shard that kept failing) and the summed `stats.json`.

Readers of the stage (assembly, the wikipedia stage) take `pipelines.shards.stage_files(dir, name)`: the union
of the shards' files in shard order, which holds the same rows as the one-shard output in the same order.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.dump_io import compression_of
from pipelines.shards import LINE_START, Shard, ShardPlan, count_lines, failure_hook, open_shard, peak_rss_mib
from pipelines.text_stage import REJECTS
from pipelines.wikidata import STAGE, parse_reader

PROGRESS_FILE = "_progress.json"
_SUMMED = ("lines", "entities", "items", "properties", "items_with_en_label", "items_with_en_description",
           "items_with_en_aliases", "items_with_enwiki", "aliases", "claims", "deprecated_skipped",
           "novalue_somevalue_skipped", "layout_lines", "python_fallback_lines", "python_fallback_chunks",
           "rejects", "decompressed_bytes", "cpu_seconds", "parse_seconds", "read_seconds")


def parse_wikidata_shard(dump: str | os.PathLike, out_dir: str | os.PathLike, plan: ShardPlan, shard: Shard, *,
                         threads: int = 1, attempt: int = 1) -> dict:
    """Parse one shard of `plan` into `out_dir` (which must be empty); returns its stats (also stats.json).

    `threads` (per shard) split as in parse_wikidata: compressed input gives half to decompression.
    """
    failure_hook(STAGE, shard.index, attempt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    compressed = plan.index_file is not None
    decompress_threads = max(1, threads // 2) if compressed else 0
    reader = open_shard(dump, shard, plan.size, plan.index_file, LINE_START, max(1, decompress_threads))
    length = reader.length
    progress_file = out / PROGRESS_FILE

    def report(done: int, entities: int) -> None:
        tmp = progress_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"bytes": done, "total": length, "entities": entities}))
        os.replace(tmp, progress_file)

    t0 = time.perf_counter()
    stats = parse_reader(reader, Path(dump).name, compression_of(dump), out, threads=max(1, threads),
                         decompress_threads=decompress_threads, total=lambda: (reader.position, length),
                         label=f"wikidata {shard.name}", on_chunk=report)
    stats.update(shard=shard.as_dict(), begin=reader.begin, stop=reader.stop, attempt=attempt,
                 peak_rss_mib=peak_rss_mib(), pid=os.getpid(), wall_seconds=round(time.perf_counter() - t0, 3))
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    progress_file.unlink(missing_ok=True)
    return stats


def shard_progress(stage_dir: str | os.PathLike, plan: ShardPlan, finished: dict[int, dict],
                   count_key: str = "entities") -> tuple[int, int]:
    """(decompressed bytes, records) done over all shards: finished shards' stats, running shards' progress
    files (wikidata shards write one as they go; other stages count at the end of each shard)."""
    done = records = 0
    for shard in plan.shards:
        if shard.index in finished:
            stats = finished[shard.index]
            done += int(stats.get("decompressed_bytes") or 0)
            records += int(stats.get(count_key) or 0)
            continue
        try:
            state = json.loads((Path(stage_dir) / shard.name / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            continue
        done += int(state.get("bytes", 0))
        records += int(state.get("entities", 0))
    return done, records


def merge_wikidata_shards(stage_dir: str | os.PathLike, plan: ShardPlan, finished: dict[int, dict],
                          failed: dict[int, str]) -> dict:
    """Write the stage's rejects.parquet (dump-wide line numbers; a `shard_failed` row per failed shard) and
    stats.json from the shards' outputs; returns the summed stats."""
    stage = Path(stage_dir)
    source = Path(plan.path).name
    tables, offset, offsets_exact = [], 0, True
    for shard in plan.shards:
        if shard.index in failed:
            raw = f"{shard.describe()}: {failed[shard.index]}"
            try:
                lines = count_lines(plan.path, shard, plan.size, plan.index_file)
            except Exception as exc:  # noqa: BLE001 - the range cannot even be read: later line numbers shift
                lines, offsets_exact = 0, False
                raw += f" (its lines could not be counted either: {exc}; line numbers after it are too small)"
            tables.append(pa.table({"stage": [STAGE], "source": [source], "position": [f"bytes {shard.start}-"
                                    f"{shard.end}"], "reason": ["shard_failed"], "raw": [raw[:500]],
                                    "action": ["dropped"]}, schema=REJECTS))
        else:
            rejects = pq.read_table(stage / shard.name / "rejects.parquet")
            position = pc.add(rejects["position"], offset).cast(pa.string())
            tables.append(rejects.set_column(2, "position", position).cast(REJECTS))
            lines = int(finished[shard.index]["lines"])
        offset += lines
    merged = pa.concat_tables(tables) if tables else REJECTS.empty_table()
    tmp = stage / "rejects.parquet.tmp"
    pq.write_table(merged, tmp, compression="zstd")
    os.replace(tmp, stage / "rejects.parquet")
    stats = _sum_stats(plan, finished, failed)
    stats["line_numbers_exact"] = offsets_exact
    (stage / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats


def _sum_stats(plan: ShardPlan, finished: dict[int, dict], failed: dict[int, str]) -> dict:
    total: Counter = Counter()
    reasons: Counter = Counter()
    actions: Counter = Counter()
    for stats in finished.values():
        total.update({k: stats.get(k) or 0 for k in _SUMMED})
        reasons.update(stats.get("rejects_by_reason", {}))
        actions.update(stats.get("rejects_by_action", {}))
    if failed:
        reasons["shard_failed"] += len(failed)
        actions["dropped"] += len(failed)
        total["rejects"] += len(failed)
    shards = [finished[i] for i in sorted(finished)]
    walls = [s.get("wall_seconds") or s.get("seconds") or 0 for s in shards]
    return {
        "stage": STAGE,
        "source": Path(plan.path).name,
        "shards": len(plan.shards),
        "shards_failed": {str(i): failed[i] for i in sorted(failed)},
        "decompressed_size": plan.size,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in total.items()},
        "rejects_by_reason": dict(sorted(reasons.items())),
        "rejects_by_action": dict(sorted(actions.items())),
        "truncated": False,
        "input_error": None,
        "shard_seconds_max": round(max(walls), 3) if walls else 0,
        "shard_seconds_sum": round(sum(walls), 3),
        "peak_rss_mib_max": max((s.get("peak_rss_mib") or 0 for s in shards), default=0),
        "per_shard": [{k: s.get(k) for k in ("shard", "begin", "stop", "entities", "lines", "wall_seconds",
                                             "read_seconds", "parse_seconds", "peak_rss_mib", "pid", "attempt")}
                      for s in shards],
    }
