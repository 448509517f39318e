"""Sampler benchmark (run by `make bench`): sampled subgraphs/s of jaket.sampling.NeighborSampler against
torch_geometric's NeighborLoader (needs pyg-lib or torch-sparse; skipped with a message without them) and
against a per-node Python loop doing the same sampling (the non-vectorised reference).

    .venv/bin/python benchmarks/bench_sampler.py [--kg STORE] [--batches 16,256] [--fanouts 4,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def loop_sampler(indptr: list[int], neighbors: list[int], roots: list[int], fanouts: list[int],
                 rng: object) -> tuple[list[int], list[int]]:
    """The same sampling, one node at a time in Python."""
    seen, nodes, edges, frontier = set(roots), list(roots), [], list(roots)
    for f in fanouts:
        nxt = []
        for v in frontier:
            lo, hi = indptr[v], indptr[v + 1]
            deg = hi - lo
            picks = range(lo, hi) if deg <= f else {lo + int(rng.random() * deg) for _ in range(f)}
            for p in picks:
                edges.append(p)
                u = neighbors[p]
                if u not in seen:
                    seen.add(u)
                    nodes.append(u)
                    nxt.append(u)
        frontier = nxt
    return nodes, edges


def rate(fn: object, seconds: float = 2.0) -> float:
    fn()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t)


def main() -> None:
    import random

    import torch
    from bench_memory import default_store

    from jaket.sampling import GraphTensors, NeighborSampler
    from kg_store.store import KGStore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kg", type=Path, default=None)
    ap.add_argument("--batches", default="16,256,4096")
    ap.add_argument("--fanouts", default="4,2")
    args = ap.parse_args()
    fanouts = [int(x) for x in args.fanouts.split(",")]
    store_path = args.kg or default_store()
    with KGStore(store_path) as store:
        csr = store.csr(add_inverse=True)
        graph = GraphTensors.from_csr(csr, store.num_relations)
    n = graph.num_nodes
    print(f"# bench_sampler: {store_path}: {n} entities, {len(graph.neighbors)} directed edges, fanouts {fanouts}, "
          f"load average {os.getloadavg()[0]:.1f}")
    sampler = NeighborSampler(graph, fanouts)
    gen = torch.Generator().manual_seed(0)
    indptr, neighbors = graph.indptr.tolist(), graph.neighbors.tolist()
    rng = random.Random(0)

    try:
        import torch_geometric.typing as pyg_typing
        has_backend = bool(getattr(pyg_typing, "WITH_PYG_LIB", False) or getattr(pyg_typing, "WITH_TORCH_SPARSE", False))
    except ImportError:
        has_backend = False
    print("\n| torch threads | roots/batch | jaket subgraphs/s | python loop subgraphs/s | vectorised vs loop | "
          "NeighborLoader subgraphs/s |")
    print("|---|---|---|---|---|---|")
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for b in [int(x) for x in args.batches.split(",")]:
            ours = rate(lambda b=b: sampler.sample(torch.randint(n, (b,), generator=gen), gen))
            loop = rate(lambda b=b: loop_sampler(indptr, neighbors, [rng.randrange(n) for _ in range(b)], fanouts,
                                                 rng))
            pyg = "skipped: needs pyg-lib or torch-sparse"
            if has_backend:
                from torch_geometric.data import Data
                from torch_geometric.loader import NeighborLoader

                data = Data(edge_index=torch.stack([graph.neighbors, graph.targets]), num_nodes=n)
                loader = NeighborLoader(data, num_neighbors=fanouts, batch_size=b, shuffle=True)
                it = iter(loader)
                pyg = f"{rate(lambda it=it: next(it)):.1f}"
            print(f"| {threads} | {b} | {ours:.1f} | {loop:.1f} | {ours / loop:.2f}x | {pyg} |", flush=True)
    torch.set_num_threads(default_threads)
    if not has_backend:
        print("\nNeighborLoader comparison skipped: torch_geometric's neighbour sampling needs pyg-lib or "
              "torch-sparse, neither is installed in this environment.")


if __name__ == "__main__":
    main()
