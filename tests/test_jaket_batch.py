"""`jaket batch`: the first pretraining batch of a seed, exactly what the trainer's first step samples."""

from __future__ import annotations

import polars as pl
from click.testing import CliRunner

from jaket.batch_inspect import first_batch
from jaket.cli import main as jaket_cli
from jaket.lm import load_tokenizer
from kg_store.store import KGStore
from tests.jaket_fixtures import tiny_bert, tiny_store  # noqa: F401 - pytest fixtures
from tests.test_jaket_model import _trainer


def test_first_batch_is_what_the_trainer_samples(tiny_bert, tiny_store):  # noqa: F811
    trainer = _trainer(tiny_bert, tiny_store, seed=3, kg_batch=4, text_batch=2, rel_batch=3, fanouts=[2, 2])
    text, sub, pairs, rels = trainer.sample()
    with KGStore(tiny_store) as store:
        frame = first_batch(store, load_tokenizer(tiny_bert), seed=3, fanouts=(2, 2), kg_batch=4, text_batch=2,
                            rel_batch=3, max_seq_len=trainer.model.config.max_seq_len)
        triples = {tuple(t) for t in store.triples().tolist()}
    nodes = frame.filter(pl.col("kind") == "node")
    assert nodes["entity_id"].to_list() == sub.node_ids.tolist()
    assert nodes["is_root"].sum() == sub.num_roots
    assert frame.filter(pl.col("kind") == "passage")["passage_id"].to_list() == text.passage_ids.tolist()
    mentions = frame.filter(pl.col("kind") == "mention")
    assert mentions["entity_id"].to_list() == text.mention_entities.tolist()
    edges = frame.filter(pl.col("kind") == "edge")
    assert len(edges) == sub.edge_index.size(1)
    # every message edge and every L_r target is a stored triple (inverse edges read back to their triple)
    for kind in ("edge", "relation_target"):
        rows = frame.filter(pl.col("kind") == kind).select("head_id", "relation_id", "tail_id").rows()
        assert rows and set(rows) <= triples
    targets = frame.filter(pl.col("kind") == "relation_target")
    assert targets["relation_id"].to_list() == rels.tolist()
    assert targets["head_id"].to_list() == sub.node_ids[pairs[:, 0]].tolist()


def test_batch_cli_and_query(tiny_store, tmp_path):  # noqa: F811
    out = tmp_path / "b.parquet"
    runner = CliRunner()
    result = runner.invoke(jaket_cli, ["batch", "--kg", str(tiny_store), "--seed", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    again = tmp_path / "b2.parquet"
    runner.invoke(jaket_cli, ["batch", "--kg", str(tiny_store), "--seed", "1", "--out", str(again)])
    assert pl.read_parquet(out).equals(pl.read_parquet(again))          # deterministic under the seed
    other = tmp_path / "b3.parquet"
    runner.invoke(jaket_cli, ["batch", "--kg", str(tiny_store), "--seed", "2", "--out", str(other)])
    assert not pl.read_parquet(out).equals(pl.read_parquet(other))
    result = runner.invoke(jaket_cli, ["kg", "sql", "--kg", str(tiny_store), "--file",
                                       "kg_store/queries/pretraining_batch.sql", "--param", f"batch={out}",
                                       "--format", "csv"])
    assert result.exit_code == 0, result.output
    parts = {line.split(",")[0] for line in result.output.splitlines()[1:]}
    assert {"text", "mention", "root", "message edge", "L_r target"} <= parts
