"""Sharded ingestion with 1 and 2 worker processes (Dask LocalCluster, one thread per worker), measured in the
same run (see benchmarks/README.md, "Scaling"). For each input: the seek-index pass, every shard's
decompression / parsing seconds, the merge, the assembly into a store (one DuckDB process), wall time and
throughput with 1 and 2 workers (ratio), and the peak RSS (VmHWM) of each worker process.

Inputs: data/sample (miniwiki .bz2 dump + XML), ../shared/data/wikidata and ../shared/data/wikipedia samples
when present, and the bench_ingest dump (the sample's lines repeated with renumbered ids, plain and .bz2,
cached in --work).
Usage: python benchmarks/bench_scaling_ingest.py [--entities 200000] [--shards 8] [--json FILE] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from kg_store import store  # noqa: E402
from pipelines.assemble import AssembleOptions, assemble  # noqa: E402
from pipelines.shards import plan_shards  # noqa: E402
from pipelines.wikidata import parse_wikidata  # noqa: E402
from pipelines.wikidata_shards import merge_wikidata_shards, parse_wikidata_shard  # noqa: E402
from pipelines.wikipedia_shards import merge_wikipedia_shards, parse_wikipedia_shard  # noqa: E402

SAMPLE = REPO / "data" / "sample"
SHARED = REPO.parent / "shared" / "data"


def cluster(workers: int):
    from distributed import Client, LocalCluster

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None)
    return local, Client(local)


def run_wikidata(client, dump: Path, out: Path, shards: int) -> dict:
    """Index, shards on the cluster, merge, assembly of a wikidata-only store: seconds and per-shard stats."""
    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    plan = plan_shards(dump, shards, out / "_index", "bench", threads=1)   # one decompression pass, 1 thread
    index_s, index_cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    futures = [client.submit(parse_wikidata_shard, dump, out / s.name, plan, s, threads=1, pure=False)
               for s in plan.shards]
    stats = client.gather(futures)
    shards_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    merged = merge_wikidata_shards(out, plan, {s["shard"]["index"]: s for s in stats}, {})
    merge_s = time.perf_counter() - t2
    c3 = time.process_time()
    with store.atomic_store(out / "store.duckdb") as con:
        assembled = assemble(con, out, AssembleOptions())
    return {"input": dump.name, "size": plan.size, "entities": merged["entities"], "claims": merged["claims"],
            "index_s": index_s, "index_cpu": index_cpu, "shards_s": shards_s, "merge_s": merge_s,
            "assemble_s": assembled["assemble_seconds"], "assemble_cpu": time.process_time() - c3,
            "triples": assembled["triples"], "shards": stats}


def run_wikipedia(client, xml: Path, wd: Path, out: Path, shards: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    plan = plan_shards(xml, shards, out / "_index", "bench", threads=1)
    index_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    stats = client.gather([client.submit(parse_wikipedia_shard, xml, out / s.name, plan, s, pure=False)
                           for s in plan.shards])
    shards_s = time.perf_counter() - t1
    finished = {s["shard"]["index"]: s for s in stats}
    t2 = time.perf_counter()
    merge_wikipedia_shards(xml, wd, out, plan, finished, alias_linking=False)   # pass 2 only
    resolve_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    merged = merge_wikipedia_shards(xml, wd, out, plan, finished)               # passes 2 + 3 (alias linking)
    return {"input": xml.name, "size": plan.size, "articles": merged["articles"], "passages": merged["passages"],
            "index_s": index_s, "shards_s": shards_s, "resolve_s": resolve_s, "merge_s": time.perf_counter() - t3,
            "shards": stats}


def summary(result: dict, kind: str) -> str:
    per = result["shards"]
    count = result["entities"] if kind == "wikidata" else result["articles"]
    read = sum(s.get("read_seconds") or 0 for s in per)
    parse = sum(s.get("parse_seconds") or s.get("wall_seconds") or 0 for s in per)
    cpu = sum(s.get("cpu_seconds") or 0 for s in per)
    rss = {}
    for s in per:
        rss[s["pid"]] = max(rss.get(s["pid"], 0), s.get("peak_rss_mib") or 0)
    wall = result["shards_s"]
    text = (f"{result['input']}: {result['size'] / 1e6:,.1f} MB, {count:,} {'entities' if kind == 'wikidata' else 'articles'}"
            f"; index {result['index_s']:.1f}s; shards {wall:.2f}s wall = {count / wall:,.0f}/s, "
            f"{result['size'] / 1e6 / wall:,.1f} MB/s, {cpu:.1f} CPU s ({result['size'] / 1e6 / max(cpu, 1e-9):,.1f} "
            f"MB per CPU s); merge {result['merge_s']:.2f}s")
    if kind == "wikidata":
        text += (f"; assembly {result['assemble_s']:.2f}s ({result['assemble_cpu']:.1f} CPU s, "
                 f"{result['claims']:,} claims); index pass {result['index_cpu']:.1f} CPU s")
    else:
        text += f" (pass 2 alone {result['resolve_s']:.2f}s; {result['passages']:,} passages)"
    text += (f"\n      per shard (mean of {len(per)}): wall {statistics.mean(s['wall_seconds'] for s in per):.2f}s, "
             f"read/decompress {read / len(per):.2f}s ({result['size'] / 1e6 / max(read, 1e-9):,.1f} MB/s per "
             f"thread), parse {parse / len(per):.2f}s ({count / max(parse, 1e-9):,.0f}/s per thread)"
             f"; peak RSS per worker: {', '.join(f'{v:.0f}' for v in sorted(rss.values()))} MiB")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=200_000, help="size of the repeated-sample dump")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "jaket-bench-ingest")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement here")
    args = parser.parse_args()
    from bench_ingest import inputs

    files = inputs(args.work, args.entities)
    dumps = [SAMPLE / "mini-wikidata-all.json.bz2"]
    if (SHARED / "wikidata").is_dir():
        dumps += [SHARED / "wikidata" / "wikidata_sample_all.json.bz2", SHARED / "wikidata" / "short_stream.json.bz2"]
    dumps += [files[args.entities], files[-1]]
    xmls = [SAMPLE / "mini-enwiki-pages-articles.xml.bz2"]
    xmls += sorted((SHARED / "wikipedia").glob("*.bz2")) if (SHARED / "wikipedia").is_dir() else []
    out = args.work / "scaling"
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}; {args.shards} shards per input", flush=True)
    # the one-shard stage on the sample gives the wikidata dir the wikipedia merges resolve against
    wd_sample = out / "wd-sample"
    shutil.rmtree(wd_sample, ignore_errors=True)
    parse_wikidata(dumps[0], wd_sample)
    results: dict[str, list] = {}
    for workers in (1, 2):
        local, client = cluster(workers)
        try:
            print(f"\n== {workers} worker process(es) ==", flush=True)
            for dump in dumps:
                shards = args.shards if dump.stat().st_size > 10 << 20 else 2
                result = run_wikidata(client, dump, out / f"wd-{workers}", shards)
                results.setdefault(f"wikidata {dump.name}", []).append(result)
                print("  " + summary(result, "wikidata"), flush=True)
            for xml in xmls:
                result = run_wikipedia(client, xml, wd_sample, out / f"wp-{workers}", 2)
                results.setdefault(f"wikipedia {xml.name}", []).append(result)
                print("  " + summary(result, "wikipedia"), flush=True)
        finally:
            client.close()
            local.close()
    print(f"\nratios, 2 workers / 1 worker (same run; load average now {os.getloadavg()[0]:.1f}):")
    for name, (one, two) in results.items():
        print(f"  {name:<60} shards wall {one['shards_s']:7.2f}s -> {two['shards_s']:7.2f}s: "
              f"{one['shards_s'] / two['shards_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"measurements: {args.json}")


if __name__ == "__main__":
    main()
