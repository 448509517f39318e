"""`jaket memory refresh --changed-only` against a full refresh, after an incremental update that changes 1% of
the entities of the demo store (numbers go to benchmarks/README.md, section "Incremental updates").

1. a copy of kg_store/wiki.duckdb (built from the bundled sample when missing) and a checkpoint of the default
   encoder made by `jaket-train --steps 2` on it;
2. `jaket kg update` with a TSV of 1% changed entities (90% new descriptions of existing entities, 10% new
   entities), timed;
3. in the same process: a changed-only refresh with a cold token cache (the update changed the rows digest,
   so every description is tokenized once), a full refresh (warm cache), a changed-only refresh again (warm);
   the ratios are against the full refresh of this run. The changed rows are checked against the full refresh.

    .venv/bin/python benchmarks/bench_refresh_changed.py [--kg kg_store/wiki.duckdb] [--work /tmp/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
BIN = REPO / ".venv" / "bin"


def demo_store(kg: Path, work: Path) -> Path:
    """A private copy of the demo store (and its token/memory caches), built from the sample when missing."""
    work.mkdir(parents=True, exist_ok=True)
    copy = work / "wiki.duckdb"
    if not kg.exists():
        subprocess.run([str(BIN / "jaket-build-kg"), "--wikidata", "data/sample/mini-wikidata-all.json.bz2",
                        "--wikipedia", "data/sample/mini-enwiki-pages-articles.xml.bz2", "--out", str(kg)],
                       cwd=REPO, check=True)
    for leftover in (copy, copy.with_name(copy.name + ".tokcache"), copy.with_name(copy.name + ".work")):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    shutil.copyfile(kg, copy)
    cache = kg.with_name(kg.name + ".tokcache")
    if cache.is_dir():
        shutil.copytree(cache, copy.with_name(copy.name + ".tokcache"))
    return copy


def changes_tsv(kg: Path, path: Path, fraction: float, seed: int = 0) -> tuple[int, int]:
    """1% of the entities: new descriptions for 90% of them (existing ids), 10% new entities."""
    from kg_store.store import KGStore

    rng = random.Random(seed)
    with KGStore(kg) as s:
        rows = s.query("SELECT e.qid, e.label, e.description, coalesce(c.qid, c.label, '') FROM entities e "
                       "LEFT JOIN categories c USING (category_id) WHERE e.label IS NOT NULL ORDER BY entity_id")
        n = s.num_entities
    k = max(1, round(fraction * n))
    new = max(1, k // 10)
    lines = ["id\tlabel\tdescription\tcategory"]
    for qid, label, desc, category in rng.sample(rows, k - new):
        lines.append(f"{qid}\t{label}\t{label}, {(desc or '').split(', ', 1)[-1]} (revised {rng.randint(0, 999)})"
                     f"\t{category}")
    for i in range(new):
        lines.append(f"QNEW{i}\tNew entity {i}\tNew entity {i}, an entity added by the benchmark update\t")
    path.write_text("\n".join(lines) + "\n")
    return k - new, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kg", default=str(REPO / "kg_store" / "wiki.duckdb"))
    parser.add_argument("--work", default="/tmp/bench")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: contention-free on a busy box)")
    args = parser.parse_args()
    import torch

    from flows.update_tsv import update_store_from_tsv
    from jaket.memory import EntityMemory
    from jaket.refresh import refresh_memory

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    kg = demo_store(Path(args.kg), work)
    run = work / "run-steps2"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "jaket-train"), "--kg", str(kg), "--steps", "2", "--out", str(run), "--no-progress",
                    "--threads", str(args.threads)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print(f"checkpoint: jaket-train --steps 2 in {time.perf_counter() - t0:.1f}s", flush=True)
    changed, new = changes_tsv(kg, work / "changed.tsv", args.fraction)
    t0 = time.perf_counter()
    update = update_store_from_tsv(kg, entities=work / "changed.tsv")
    update_s = time.perf_counter() - t0
    print(f"update: {changed} changed + {new} new entities in {update_s:.2f}s: {json.dumps(update['entity_changes'])}")
    runs = {}
    for name, only in (("changed-only (cold token cache)", True), ("full refresh", False),
                       ("changed-only (warm token cache)", True)):
        out = work / f"memory-{name.split()[0]}-{len(runs)}.safetensors"
        runs[name] = refresh_memory(run, kg, changed_only=only, out=out, since=0 if only else None, progress=False)
        r = runs[name]
        print(f"{name}: {r['encoded_entities']} entities encoded, total {r['total_s']:.2f}s "
              f"(tokenize {r['tokenize_s']:.2f}s, encode {r['encode_s']:.2f}s)", flush=True)
    full = runs["full refresh"]
    print("\n| refresh | entities encoded | total s | tokenize s | LM1 encode s | total vs full | encode vs full |")
    print("|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['encoded_entities']:,} | {r['total_s']:.2f} | {r['tokenize_s']:.2f} | "
              f"{r['encode_s']:.2f} | {r['total_s'] / full['total_s']:.3f} | {r['encode_s'] / full['encode_s']:.3f} |")
    # correctness: the changed rows equal the full refresh's, the others the checkpoint's memory
    old = EntityMemory.load(run / "memory.safetensors").entity
    part = EntityMemory.load(runs["changed-only (warm token cache)"]["memory"]).entity
    whole = EntityMemory.load(full["memory"]).entity
    n = old.size(0)
    differs = (part[:n] != old).any(dim=1)
    rows = torch.cat([differs, torch.ones(part.size(0) - n, dtype=torch.bool)]).nonzero().flatten()
    print(f"\nrows differing from the checkpoint's memory: {int(differs.sum())} of {n} (+{part.size(0) - n} new); "
          f"max |changed-only - full| on them: {float((part[rows] - whole[rows]).abs().max()):.2e}")


if __name__ == "__main__":
    main()
