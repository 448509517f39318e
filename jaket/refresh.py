"""`jaket memory refresh`: bring a run's entity context memory up to date with its (updated) KG store.

    jaket memory refresh --checkpoint runs/demo --kg kg_store/wiki.duckdb --changed-only

With `--changed-only`, LM1 of the checkpoint re-encodes only the entities the store's incremental updates
marked 'new' or 'description' in `entity_changes` (pipelines/update.py) since the memory was last refreshed
against the store, plus every entity id beyond the memory's rows; the memory matrix grows to the store's
entity count and every other row is left exactly as it was. New or changed relations are re-encoded into the
relation rows the same way. Without it, every description is re-encoded. The fresh rows replace the old ones
(no momentum). The result is written as safetensors (RUN_DIR/memory.safetensors unless --out), with the store's
`update_seq` in its metadata so that the next `--changed-only` refresh starts after it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
import torch

from jaket.memory import EntityMemory, encode_descriptions
from jaket.tokens import cached_tokenize, relation_rows

MEMORY_CHANGES = ("new", "description")   # = pipelines.update.MEMORY_CHANGES (no pipelines import here)


def memory_update_seq(path: str | os.PathLike) -> int | None:
    """The store `update_seq` a memory file was last refreshed against (None: never refreshed by this tool)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        value = (handle.metadata() or {}).get("kg_update_seq")
    return None if value is None else int(value)


def stale_ids(store: object, table: str, id_col: str, since: int, rows_in_memory: int, total: int) -> list[int]:
    """Ids to re-encode: changed (MEMORY_CHANGES) in an update after `since`, or beyond the memory's rows."""
    changed: set[int] = set()
    if store.scalar(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{table}'"):
        changed = {i for (i,) in store.query(
            f"SELECT DISTINCT {id_col} FROM {table} WHERE update_seq > ? AND change IN {MEMORY_CHANGES}",
            [since])}
    return sorted({i for i in changed if i < total} | set(range(rows_in_memory, total)))


def _grow(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    if matrix.size(0) >= rows:
        return matrix[:rows].clone()
    return torch.cat([matrix, matrix.new_zeros(rows - matrix.size(0), matrix.size(1))])


def refresh_memory(checkpoint: str | os.PathLike, kg: str | os.PathLike | None = None, changed_only: bool = False,
                   out: str | os.PathLike | None = None, since: int | None = None, batch_tokens: int = 8192,
                   device: str = "cpu", progress: bool = True) -> dict:
    """Re-encode the stale (or all) rows of RUN_DIR/memory.safetensors against store `kg`; returns counts."""
    from safetensors.torch import save_file

    from jaket.lm import load_tokenizer
    from jaket.model import JAKETModel
    from kg_store.store import KGStore, StoreError

    run = Path(checkpoint)
    config = json.loads((run / "config.json").read_text())
    kg = Path(kg or config["kg"])
    t0 = time.perf_counter()
    memory = EntityMemory.load(run / "memory.safetensors", device)
    if since is None:
        since = memory_update_seq(run / "memory.safetensors") or 0
    model = JAKETModel.load(run, device).eval()
    tokenizer = load_tokenizer(run / "lm")
    pad_id, max_len = int(tokenizer.pad_token_id), model.config.desc_max_len
    with KGStore(kg) as store:
        n, p = store.num_entities, store.num_relations
        if memory.entity.size(0) > n or memory.relation.size(0) > p:
            raise StoreError(f"the memory has {memory.entity.size(0)} entity / {memory.relation.size(0)} relation "
                             f"rows, the store {n} / {p}: not this run's store (or an older one)")
        seq = int(store.meta().get("update_seq") or 0)
        if changed_only:
            ent_ids = stale_ids(store, "entity_changes", "entity_id", since, memory.entity.size(0), n)
            rel_ids = stale_ids(store, "relation_changes", "relation_id", since, memory.relation.size(0), p)
        else:
            ent_ids, rel_ids = list(range(n)), list(range(p))
        t_tok = time.perf_counter()
        ent_tokens = cached_tokenize(kg, "entity", tokenizer, store.entity_descriptions(), max_len)
        rel_tokens = cached_tokenize(kg, "relation", tokenizer, relation_rows(store), max_len) if rel_ids else None
    t_enc = time.perf_counter()
    entity, relation = _grow(memory.entity, n), _grow(memory.relation, p)
    if ent_ids:
        index = torch.tensor(ent_ids, dtype=torch.long)
        entity[index.to(entity.device)] = encode_descriptions(
            model.lm, ent_tokens, index, pad_id=pad_id, batch_tokens=batch_tokens, progress=progress,
            desc="memory refresh" + (" (changed)" if changed_only else ""))
    if rel_ids:
        index = torch.tensor(rel_ids, dtype=torch.long)
        relation[index.to(relation.device)] = encode_descriptions(
            model.lm, rel_tokens, index, pad_id=pad_id, batch_tokens=batch_tokens, progress=False)
    t_done = time.perf_counter()
    refreshed = EntityMemory(entity, relation, memory.schedule, memory.refreshes, memory.last_refresh)
    target = Path(out) if out else run / "memory.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    save_file({"entity": entity.contiguous().cpu(), "relation": relation.contiguous().cpu()}, str(tmp),
              metadata={"state": json.dumps(refreshed.state()), "kg_update_seq": str(seq), "kg": str(kg.resolve()),
                        "refresh": "changed-only" if changed_only else "full"})
    os.replace(tmp, target)
    return {"memory": str(target), "entities": n, "relations": p, "encoded_entities": len(ent_ids),
            "encoded_relations": len(rel_ids), "grown_entities": max(0, n - memory.entity.size(0)),
            "since_update_seq": since, "kg_update_seq": seq, "tokenize_s": round(t_enc - t_tok, 3),
            "encode_s": round(t_done - t_enc, 3), "total_s": round(time.perf_counter() - t0, 3)}


@click.group(name="memory")
def memory_group() -> None:
    """The entity context memory of a pretraining run."""


@memory_group.command(name="refresh")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False), help="run directory")
@click.option("--kg", default=None, help="the store (default: the run's store)")
@click.option("--changed-only", is_flag=True,
              help="re-encode only new entities and changed descriptions (entity_changes), keep the other rows")
@click.option("--since", type=int, default=None,
              help="with --changed-only: changes of updates after this update_seq (default: recorded in the "
                   "memory file by the last refresh, else 0 = every update)")
@click.option("--out", default=None, help="where to write the memory (default: RUN_DIR/memory.safetensors)")
@click.option("--batch-tokens", type=int, default=8192, show_default=True, help="padded tokens per LM1 batch")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default="auto", show_default=True, help="torch CPU threads (a number or auto)")
@click.option("--no-progress", is_flag=True, help="no progress bar / lines")
def refresh_command(checkpoint: str, kg: str | None, changed_only: bool, since: int | None, out: str | None,
                    batch_tokens: int, device: str, threads: str, no_progress: bool) -> None:
    """Re-encode entity descriptions with the checkpoint's LM1 into its memory (all, or only what changed)."""
    from jaket.train import pick_threads
    from kg_store.store import StoreError

    torch.set_num_threads(pick_threads(threads))
    try:
        stats = refresh_memory(checkpoint, kg, changed_only, out, since, batch_tokens, device, not no_progress)
    except StoreError as exc:
        click.echo(f"jaket memory refresh: error: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps(stats, indent=2))
