"""Context-memory refresh time with 1 and 2 ranks (torch.distributed, gloo, CPU): the distributed pretraining
split of jaket/distributed.py (each rank encodes a contiguous shard of the entity descriptions with its LM1
copy, then all-gather; momentum update on every rank). Numbers go to benchmarks/README.md ("Distributed
pretraining"); run by `make bench`.

Each world size runs in its own spawned process group; each rank uses cores / ranks torch threads. Timed, best
of --repeat after one warm-up batch: the whole EntityMemory.refresh (encode + all-gather + momentum) as rank 0
sees it, the slowest rank's encode, and a bare all-gather of the same shard sizes after a barrier. The
gathered memory of every world size is checked against the 1-rank one (max |diff|).

    .venv/bin/python benchmarks/bench_refresh_ranks.py [--kg kg_store/wiki.duckdb] [--ranks 1,2] [--repeat 1]
        [--sample N] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEMO = REPO / "kg_store" / "wiki.duckdb"


def ensure_demo_store(path: Path) -> Path:
    """The demo store, built from the packaged sample when missing."""
    if path.exists():
        return path
    if path != DEMO:
        raise SystemExit(f"store not found: {path}")
    cmd = [str(REPO / ".venv" / "bin" / "jaket-build-kg"), "--wikidata", "data/sample/mini-wikidata-all.json.bz2",
           "--wikipedia", "data/sample/mini-enwiki-pages-articles.xml.bz2", "--out", str(path)]
    print(f"# building the demo store: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, store: str, lm_name: str, sample: int, repeat: int,
          result: str, reference: str, threads: int) -> None:
    import torch
    import torch.distributed as tdist

    from jaket import distributed as dist
    from jaket.lm import LanguageModule, load_tokenizer
    from jaket.memory import EntityMemory, encode_descriptions
    from jaket.model import JAKETConfig
    from jaket.tokens import TokenizedTexts, cached_tokenize
    from kg_store.store import KGStore

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    threads = threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    env = dist.setup("cpu")
    tok = load_tokenizer(lm_name)
    lm = LanguageModule.from_pretrained(lm_name).eval()
    with KGStore(store) as kg:
        tokens = cached_tokenize(kg.path, "entity", tok, kg.entity_descriptions(), JAKETConfig().desc_max_len)
    if sample and sample < len(tokens):
        t = tokens.to_tensors()
        tokens = TokenizedTexts.from_tensors({"ids": t["ids"][:int(t["offsets"][sample])],
                                              "offsets": t["offsets"][:sample + 1], "spans": t["spans"][:sample]})
    n, hidden = len(tokens), lm.hidden_size
    encode_descriptions(lm, tokens, torch.arange(min(256, n)), tok.pad_token_id)          # warm-up
    encoder = dist.ShardedEncoder(env)
    best: dict[str, float] = {}
    memory = None
    for _ in range(repeat):
        memory = EntityMemory(torch.zeros(n, hidden), torch.zeros(0, hidden))
        dist.barrier(env)
        t0 = time.perf_counter()
        memory.refresh(lm, tokens, tok.pad_token_id, step=0, encode=encoder)
        refresh_s = time.perf_counter() - t0
        times = torch.tensor([refresh_s, encoder.last_encode_s, encoder.last_gather_s], dtype=torch.float64)
        if env.distributed:
            tdist.all_reduce(times, op=tdist.ReduceOp.MAX)
        bounds = dist.shard_bounds(tokens.lengths(), world)
        shard = memory.entity[bounds[rank]:bounds[rank + 1]].clone()
        dist.barrier(env)
        t0 = time.perf_counter()
        dist.all_gather_rows(shard, dist.shard_sizes(bounds), env)
        gather = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        if env.distributed:
            tdist.all_reduce(gather, op=tdist.ReduceOp.MAX)
        row = {"refresh_s": float(times[0]), "encode_s_max": float(times[1]), "gather_in_refresh_s": float(times[2]),
               "all_gather_s": float(gather[0])}
        if not best or row["refresh_s"] < best["refresh_s"]:
            best = row
    if env.is_main:
        from safetensors.torch import load_file, save_file

        diff = None
        if world == 1:
            save_file({"entity": memory.entity}, reference)
        elif Path(reference).exists():
            diff = float((load_file(reference)["entity"] - memory.entity).abs().max())
        Path(result).write_text(json.dumps({"ranks": world, "threads_per_rank": threads, "n": n, "hidden": hidden,
                                            "max_abs_diff_vs_1_rank": diff, **best}))
    tdist.destroy_process_group()


def run_world(world: int, store: Path, lm: str, sample: int, repeat: int, work: Path, threads: int) -> dict:
    import torch.multiprocessing as mp

    result = work / f"ranks-{world}.json"
    mp.start_processes(_rank, args=(world, _free_port(), str(store), lm, sample, repeat, str(result),
                                    str(work / "reference.safetensors"), threads), nprocs=world,
                       start_method="spawn")
    return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kg", type=Path, default=DEMO)
    ap.add_argument("--lm", default="default")
    ap.add_argument("--ranks", default="1,2", help="world sizes to time (comma list; the first is the baseline)")
    ap.add_argument("--repeat", type=int, default=1, help="timed refreshes per world size (best kept)")
    ap.add_argument("--sample", type=int, default=0, help="only the first N descriptions (0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per rank (0 = cores / ranks; 1 = each "
                    "rank brings one core, as a rank on its own GPU or node brings its own compute)")
    args = ap.parse_args()
    from jaket.lm import resolve_lm

    store = ensure_demo_store(args.kg)
    lm = resolve_lm(args.lm)
    ranks = [int(x) for x in args.ranks.split(",")]
    print(f"# bench_refresh_ranks: store {store}, encoder {lm}, {os.cpu_count()} cores, gloo, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="jaket-bench-ranks-") as work:
        for world in ranks:
            r = run_world(world, store, lm, args.sample, args.repeat, Path(work), args.threads)
            rows.append(r)
            print(f"  {world} rank(s) x {r['threads_per_rank']} thread(s): refresh {r['refresh_s']:.2f} s "
                  f"({r['n'] / r['refresh_s']:.0f} desc/s), slowest encode {r['encode_s_max']:.2f} s, all_gather "
                  f"{r['all_gather_s'] * 1000:.1f} ms", flush=True)
    base = rows[0]["refresh_s"]
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}\n")
    print("| ranks x threads | descriptions | refresh s | desc/s | speed-up vs 1 rank | slowest rank's encode s | "
          "all_gather s (bare) | max abs diff vs 1 rank |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        diff = "-" if r["max_abs_diff_vs_1_rank"] is None else f"{r['max_abs_diff_vs_1_rank']:.1e}"
        print(f"| {r['ranks']} x {r['threads_per_rank']} | {r['n']:,} | {r['refresh_s']:.2f} | "
              f"{r['n'] / r['refresh_s']:.0f} | {base / r['refresh_s']:.2f}x | {r['encode_s_max']:.2f} | "
              f"{r['all_gather_s']:.4f} | {diff} |")


if __name__ == "__main__":
    main()
