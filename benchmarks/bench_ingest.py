"""Wikidata stage throughput and memory against baselines measured in the same run (see benchmarks/README.md).

Input: the demo sample's Wikidata lines (data/sample/mini-wikidata-all.json.bz2) repeated with renumbered ids
into a bigger dump in the real layout, plain and .bz2 (cached in --work). Measured:
  stage plain / stage bz2      parse_wikidata end to end (entities/s, wall and CPU seconds)
  (a) parse floor              orjson.loads of every entity line, nothing else (one core)
  (b) naive loop               json.loads + dicts + executemany into DuckDB, per entity (on a subset)
  (c) decompression floor      indexed-bzip2 reading the .bz2 to the end (parallel and 1 thread; best is the floor)
  peak RSS                     the stage in a fresh process on the input repeated 1x, 4x, 16x (ru_maxrss)
Usage: python benchmarks/bench_ingest.py [--entities 200000] [--repeat 1] [--skip-rss] [--work DIR]
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.dump_io import open_binary  # noqa: E402
from pipelines.wikidata import parse_wikidata  # noqa: E402

SAMPLE = REPO / "data" / "sample" / "mini-wikidata-all.json.bz2"
ID = re.compile(rb'"id":"([QP])(\d+)"')


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sample_lines() -> list[bytes]:
    with open_binary(SAMPLE) as handle:
        lines = handle.read().split(b"\n")
    return [line.rstrip(b",") for line in lines if line not in (b"", b"[", b"]")]


def build_plain(path: Path, lines: list[bytes], entities: int) -> None:
    """The sample lines repeated; copy k renumbers each entity id (Q42 -> Q{k}000000042)."""
    with open(path, "wb") as out:
        out.write(b"[\n")
        for n in range(entities):
            copy, index = divmod(n, len(lines))
            line = lines[index]
            if copy:
                line = ID.sub(lambda m, c=copy: b'"id":"%s%d%09d"' % (m[1], c, int(m[2])), line, count=1)
            out.write(line + (b",\n" if n + 1 < entities else b"\n"))
        out.write(b"]\n")


def _compress(piece: bytes) -> bytes:
    return bz2.compress(piece, 9)


def build_bz2(plain: Path, target: Path) -> None:
    """Multi-stream .bz2 (as pbzip2 writes), compressed on all cores."""
    data = plain.read_bytes()
    step = 8 << 20
    with ProcessPoolExecutor(os.cpu_count()) as pool, open(target, "wb") as out:
        for part in pool.map(_compress, (data[i : i + step] for i in range(0, len(data), step))):
            out.write(part)


def inputs(work: Path, entities: int) -> dict[int, Path]:
    work.mkdir(parents=True, exist_ok=True)
    lines = sample_lines()
    files = {}
    for count in {entities, len(lines), 4 * len(lines), 16 * len(lines)}:
        path = work / f"wikidata-{count}.json"
        if not path.exists():
            print(f"building {path} ...", flush=True)
            build_plain(path.with_suffix(".tmp"), lines, count)
            path.with_suffix(".tmp").rename(path)
        files[count] = path
    bz = work / f"wikidata-{entities}.json.bz2"
    if not bz.exists():
        print(f"building {bz} (bzip2 -9, all cores) ...", flush=True)
        build_bz2(files[entities], bz.with_suffix(".tmp"))
        bz.with_suffix(".tmp").rename(bz)
    files[-1] = bz
    return files


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, result)."""
    best = None
    for _ in range(repeat):
        c, t = cpu(), time.perf_counter()
        result = fn()
        wall, used = time.perf_counter() - t, cpu() - c
        if best is None or wall < best[0]:
            best = (wall, used, result)
    return best  # type: ignore[return-value]


def parse_floor(path: Path) -> int:
    import orjson

    n = 0
    with open(path, "rb") as handle:
        for line in handle:
            line = line.rstrip(b",\n")
            if len(line) > 1:
                orjson.loads(line)
                n += 1
    return n


def naive_loop(path: Path, limit: int) -> int:
    """What a first attempt looks like: per entity json.loads, Python dicts, executemany into DuckDB."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE items (qid VARCHAR, label VARCHAR, description VARCHAR, enwiki_title VARCHAR)")
    con.execute("CREATE TABLE claims (head_qid VARCHAR, pid VARCHAR, tail_qid VARCHAR)")
    con.execute("CREATE TABLE aliases (qid VARCHAR, alias VARCHAR)")
    n = 0
    with open(path, "rb") as handle:
        for line in handle:
            line = line.rstrip(b",\n")
            if len(line) <= 1:
                continue
            entity = json.loads(line)
            labels, descriptions = entity.get("labels") or {}, entity.get("descriptions") or {}
            row = {
                "qid": entity["id"],
                "label": labels.get("en", {}).get("value"),
                "description": descriptions.get("en", {}).get("value"),
                "enwiki_title": ((entity.get("sitelinks") or {}).get("enwiki") or {}).get("title"),
            }
            con.execute("INSERT INTO items VALUES (?, ?, ?, ?)", list(row.values()))
            aliases = [(entity["id"], a["value"]) for a in (entity.get("aliases") or {}).get("en", [])]
            if aliases:
                con.executemany("INSERT INTO aliases VALUES (?, ?)", aliases)
            triples = []
            for statements in (entity.get("claims") or {}).values():
                for st in statements:
                    snak = st["mainsnak"]
                    if (
                        snak.get("datatype") == "wikibase-item"
                        and snak["snaktype"] == "value"
                        and st["rank"] != "deprecated"
                    ):
                        value = snak["datavalue"]["value"]
                        triples.append(
                            (entity["id"], snak["property"], value.get("id") or f"Q{value['numeric-id']}")
                        )
            if triples:
                con.executemany("INSERT INTO claims VALUES (?, ?, ?)", triples)
            n += 1
            if n >= limit:
                break
    return n


def decompress_floor(path: Path, threads: int) -> int:
    import indexed_bzip2

    n = 0
    with indexed_bzip2.open(str(path), parallelization=threads) as handle:
        while block := handle.read(8 << 20):
            n += len(block)
    return n


def stage(path: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    return parse_wikidata(path, out)


RSS_CHILD = """
import resource, shutil, sys, tempfile
sys.path.insert(0, sys.argv[1])
from pipelines.wikidata import parse_wikidata
out = tempfile.mkdtemp()
stats = parse_wikidata(sys.argv[2], out)
shutil.rmtree(out)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(stats["entities"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm)
"""


def peak_rss(path: Path) -> tuple[int, int, int]:
    """(entities, ru_maxrss KiB, VmHWM KiB) of the stage in a fresh process.

    Linux carries the parent's high-water mark into ru_maxrss across fork/exec, so a child of a large
    parent reports at least the parent's size; VmHWM belongs to the new process image only.
    """
    done = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(REPO), str(path)], capture_output=True, text=True, check=True
    )
    entities, maxrss, hwm = done.stdout.split()[-3:]
    return int(entities), int(maxrss), int(hwm)


def report_rss(files: dict[int, Path]) -> None:
    base = len(sample_lines())
    print("peak RSS of the stage (fresh process, plain input):", flush=True)
    rss = {}
    for factor in (1, 4, 16):
        entities, maxrss, hwm = peak_rss(files[factor * base])
        rss[factor] = hwm
        print(
            f"  {factor:>2}x {entities:>9,} entities: VmHWM {hwm / 1024:5.0f} MiB (ru_maxrss {maxrss / 1024:.0f})"
        )
    print(f"  16x / 1x = {rss[16] / rss[1]:.2f}  (target <= 1.5)\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1, help="best of N for each timing")
    parser.add_argument("--naive-subset", type=int, default=1_000)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "jaket-bench-ingest")
    args = parser.parse_args()
    files = inputs(args.work, args.entities)
    plain, packed, n = files[args.entities], files[-1], args.entities
    out = args.work / "out"
    cores = os.cpu_count() or 1
    size = f"plain {plain.stat().st_size / 1e6:.0f} MB, bz2 {packed.stat().st_size / 1e6:.0f} MB"
    print(f"{n:,} entities: {size}; {cores} cores; load average {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_rss:  # first, while this process is small
        report_rss(files)

    results: dict[str, tuple[float, float, int]] = {}

    def record(name: str, wall: float, used: float, count: int) -> None:
        results[name] = (wall, used, count)
        rate = f"{count / wall:>9,.0f} /s, {count / used:>9,.0f} per CPU s"
        print(f"  {name:<34} {count:>9,} in {wall:7.2f} s wall ({used:6.2f} s CPU): {rate}", flush=True)

    wall, used, stats = timed(lambda: stage(plain, out), args.repeat)
    record("stage, plain", wall, used, stats["entities"])
    assert stats["entities"] == n, stats
    wall, used, count = timed(lambda: parse_floor(plain), args.repeat)
    record("(a) orjson.loads per line", wall, used, count)
    wall, used, count = timed(lambda: naive_loop(plain, args.naive_subset), 1)
    record("(b) naive loop (subset)", wall, used, count)
    wall, used, stats = timed(lambda: stage(packed, out), args.repeat)
    record("stage, bz2", wall, used, stats["entities"])
    for threads in (cores, 1):
        wall, used, _ = timed(lambda t=threads: decompress_floor(packed, t), args.repeat)
        record(f"(c) indexed-bzip2, {threads} thread(s)", wall, used, n)
    floor = min((k for k in results if k.startswith("(c)")), key=lambda k: results[k][0])

    def ratio(a: str, b: str) -> str:
        (wall_a, cpu_a, n_a), (wall_b, cpu_b, n_b) = results[a], results[b]
        return (
            f"{(n_a / wall_a) / (n_b / wall_b):7.2f}x wall, {(n_a / cpu_a) / (n_b / cpu_b):7.2f}x per CPU s"
        )

    print(f"\nratios (same run; load average now {os.getloadavg()[0]:.1f}):")
    print(f"  stage plain / (a) orjson parse floor   {ratio('stage, plain', '(a) orjson.loads per line')}")
    print(f"  stage plain / (b) naive loop           {ratio('stage, plain', '(b) naive loop (subset)')}")
    print(f"  stage bz2 / (c) {floor[4:]:<22} {ratio('stage, bz2', floor)}  (target >= 0.9)")
    print(f"  stage plain: {n / results['stage, plain'][0]:,.0f} entities/s (target >= 100,000)")


if __name__ == "__main__":
    main()
