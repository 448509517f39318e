"""`jaket batch`: what the first pretraining batch of a seed feeds the model, as a Parquet table for SQL.

It draws through `jaket.sampling.sample_pretraining_batch` with a generator seeded exactly as `jaket-train
--seed S` does, so step 1 of that run sees this batch (later steps depend on the masking draws in between).
Query it with `jaket kg sql --file kg_store/queries/pretraining_batch.sql --param batch=BATCH.parquet`.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import polars as pl
import torch

from jaket.model import JAKETConfig
from jaket.pretrain import TrainConfig
from jaket.sampling import GraphTensors, NeighborSampler, TextSampler, sample_pretraining_batch
from kg_store.store import KGStore, StoreError

TRAIN, MODEL = TrainConfig(), JAKETConfig()   # the defaults of jaket-train, so that both stay in step
COLUMNS = {"kind": pl.String, "passage_id": pl.Int64, "row": pl.Int64, "token_start": pl.Int64,
           "token_end": pl.Int64, "head_id": pl.Int64, "relation_id": pl.Int64, "tail_id": pl.Int64,
           "inverse": pl.Boolean, "entity_id": pl.Int64, "is_root": pl.Boolean}


def first_batch(store: KGStore, tokenizer: object, seed: int = 0, fanouts: tuple[int, ...] = (4, 2),
                kg_batch: int = 16, text_batch: int = 8, rel_batch: int = 32, max_seq_len: int = 64
                ) -> pl.DataFrame:
    """One row per item of the batch, `kind` = passage | mention | node | edge | relation_target."""
    num_relations = store.num_relations
    graph = GraphTensors.from_csr(store.csr(add_inverse=True), num_relations)
    text = TextSampler(store, tokenizer, text_batch, max_seq_len)
    generator = torch.Generator().manual_seed(seed)
    batch, sub, pairs, rels = sample_pretraining_batch(text, NeighborSampler(graph, list(fanouts)),
                                                       store.num_entities, num_relations, kg_batch, rel_batch,
                                                       generator)
    rows: list[dict] = []
    if batch is not None:
        rows += [{"kind": "passage", "passage_id": int(p), "row": i} for i, p in enumerate(batch.passage_ids)]
        rows += [{"kind": "mention", "passage_id": int(batch.passage_ids[r]), "row": int(r), "token_start": int(s),
                  "token_end": int(o), "entity_id": int(e)}
                 for (r, s, o), e in zip(batch.mention_spans.tolist(), batch.mention_entities.tolist(), strict=True)]
    nodes = sub.node_ids.tolist()
    rows += [{"kind": "node", "entity_id": e, "is_root": i < sub.num_roots} for i, e in enumerate(nodes)]
    src, dst = sub.edge_index.tolist()
    inverse = graph.inverse[sub.edge_ids].tolist()
    relation = graph.relations[sub.edge_ids].tolist()
    for u, v, r, inv in zip(src, dst, relation, inverse, strict=True):
        head, tail = (nodes[u], nodes[v]) if inv else (nodes[v], nodes[u])   # the stored triple (head, r, tail)
        rows.append({"kind": "edge", "head_id": head, "relation_id": r, "tail_id": tail, "inverse": inv})
    rows += [{"kind": "relation_target", "head_id": nodes[h], "relation_id": int(r), "tail_id": nodes[t]}
             for (h, t), r in zip(pairs.tolist(), rels.tolist(), strict=True)]
    return pl.DataFrame(rows, schema=COLUMNS)


@click.command(name="batch")
@click.option("--kg", "kg_path", default="kg_store/wiki.duckdb", show_default=True)
@click.option("--seed", default=0, show_default=True, help="the seed of jaket-train")
@click.option("--lm", default="default", show_default=True, help="encoder whose tokenizer the run uses")
@click.option("--fanouts", default=",".join(map(str, TRAIN.fanouts)), show_default=True)
@click.option("--kg-batch", default=TRAIN.kg_batch, show_default=True)
@click.option("--text-batch", default=TRAIN.text_batch, show_default=True)
@click.option("--rel-batch", default=TRAIN.rel_batch, show_default=True)
@click.option("--max-seq-len", default=MODEL.max_seq_len, show_default=True)
@click.option("--out", default="runs/batch-seed{seed}.parquet", show_default=True)
def batch_command(kg_path: str, seed: int, lm: str, fanouts: str, kg_batch: int, text_batch: int,
                  rel_batch: int, max_seq_len: int, out: str) -> None:
    """Write the first pretraining batch of SEED as a Parquet table (query it with
    kg_store/queries/pretraining_batch.sql)."""
    from jaket.lm import load_tokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        store = KGStore(kg_path)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    with store:
        frame = first_batch(store, load_tokenizer(lm), seed, tuple(int(f) for f in fanouts.split(",")),
                            kg_batch, text_batch, rel_batch, max_seq_len)
    path = Path(out.format(seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    counts = frame.group_by("kind").len().sort("kind").rows()
    click.echo(f"{path}: " + ", ".join(f"{n} {k}s" for k, n in counts))
    click.echo(f"jaket kg sql --kg {kg_path} --file kg_store/queries/pretraining_batch.sql --param batch={path}")
