"""The store API, the import-tsv path and the read-only CLI verbs."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from flows.import_tsv import build_from_tsv
from jaket.cli import main as jaket_cli
from kg_store import store

ENTITIES = """id\tlabel\tdescription\tcategory
Q1\tSun\tThe Sun is the star at the center of the Solar System\tstar
Q2\tEarth\tthird planet from the sun\tplanet
Q3\tMoon\t\tmoon
Q3\tMoon again\tduplicate id\tmoon
Q4\tUS\tbusiness of the US government\tcountry
Q5
"""
TRIPLES = """Q2\torbits\tQ1
Q3\torbits\tQ2
Q9\torbits\tQ1
Q2\thas_moon\tQ3
Q2\thas_moon\tQ3
only two\tfields
"""


@pytest.fixture()
def tiny_store(tmp_path: Path) -> Path:
    (tmp_path / "E.tsv").write_text(ENTITIES)
    (tmp_path / "T.tsv").write_text(TRIPLES)
    (tmp_path / "R.tsv").write_text("orbits\torbits\tmoves around\nhas_moon\thas moon\n")
    out = tmp_path / "k.duckdb"
    build_from_tsv(out, tmp_path / "E.tsv", tmp_path / "T.tsv", tmp_path / "R.tsv")
    return out


def test_import_tsv_tables(tiny_store: Path):
    with store.KGStore(tiny_store) as s:
        counts = s.counts()
        assert counts["entities"] == 5          # Q1..Q5, the duplicate Q3 dropped
        assert counts["relations"] == 2
        assert counts["triples"] == 3           # dangling Q9 dropped, duplicate triple collapsed
        assert s.entity_qids() == ["Q1", "Q2", "Q3", "Q4", "Q5"]
        reasons = dict(s.query("SELECT reason, count(*) FROM rejects GROUP BY ALL"))
        assert reasons["duplicate_entity"] == 1
        assert reasons["dangling_triple_head"] == 1
        assert reasons["missing_required_field"] == 1
        assert reasons["no_label"] == 1
        rows = {q: (d, src, a, b) for q, d, src, a, b in s.query(
            "SELECT qid, description, desc_source, desc_mention_start, desc_mention_end FROM entities")}
        # first occurrence of the label, case-insensitive
        assert rows["Q1"][1:] == ("custom", 4, 7) and rows["Q1"][0][4:7] == "Sun"
        assert rows["Q2"][2] is None                     # 'Earth' does not occur in its description
        assert rows["Q3"][:2] == ("Moon", "label")       # empty description -> the label
        assert rows["Q4"][2:] == (16, 18)                # 'US' on word boundaries, not inside 'business'
        assert store.check_integrity(s.con) == []


def test_csr_and_arrays(tiny_store: Path):
    with store.KGStore(tiny_store) as s:
        csr = s.csr(add_inverse=True)
        assert csr.num_nodes == 5 and csr.num_edges == 6
        earth = 1
        nbrs = set(zip(csr.neighbors[csr.indptr[earth]:csr.indptr[earth + 1]].tolist(),
                       csr.inverse[csr.indptr[earth]:csr.indptr[earth + 1]].tolist(), strict=True))
        assert nbrs == {(0, False), (2, False), (2, True)}   # orbits Sun, has_moon Moon, Moon orbits Earth
        forward = s.csr(add_inverse=False)
        assert forward.num_edges == 3 and not forward.inverse.any()
        assert np.array_equal(forward.degree(), [0, 2, 1, 0, 0])
        cats = s.entity_categories()
        assert cats.shape == (5,) and cats[4] == -1 and (cats[:4] >= 0).all()
        assert s.relation_descriptions()[0] == (0, "orbits, moves around")
        assert s.entity_descriptions()[4][1] == "Q5"          # no text at all: the id is encoded


def test_views_exist_and_answer(tiny_store: Path):
    con = store.connect(tiny_store)
    rows = con.execute("SELECT head_label, relation_label, tail_label FROM sampled_triples ORDER BY ALL").fetchall()
    assert ("Earth", "orbits", "Sun") in rows and len(rows) == 3
    card = con.execute("SELECT label, degree, category FROM entity_card WHERE qid = 'Q2'").fetchall()
    assert card == [("Earth", 3, "planet")]


def test_read_only_connection_refuses_writes(tiny_store: Path):
    con = store.connect(tiny_store, read_only=True)
    with pytest.raises(duckdb.Error):
        con.execute("DELETE FROM entities")


def test_missing_store_is_a_clear_error(tmp_path: Path):
    with pytest.raises(store.StoreNotFound, match="store not found"):
        store.connect(tmp_path / "nope.duckdb")
    result = CliRunner().invoke(jaket_cli, ["kg", "stats", "--kg", str(tmp_path / "nope.duckdb")])
    assert result.exit_code == 2 and "store not found" in result.output
    assert not (tmp_path / "nope.duckdb").exists()


def test_write_tables_is_one_transaction(tmp_path: Path):
    con = store.create(tmp_path / "s.duckdb")
    good = {"entity_id": [0], "qid": ["Q1"]}
    import polars as pl

    store.write_tables(con, {"entities": pl.DataFrame(good)})
    with pytest.raises(Exception):  # noqa: B017 - second table is broken: nothing of the batch may land
        store.write_tables(con, {"entities": pl.DataFrame({"entity_id": [5], "qid": ["Q5"]}),
                                 "triples": pl.DataFrame({"head_id": [None], "relation_id": [0], "tail_id": [1]})})
    assert con.execute("SELECT qid FROM entities").fetchall() == [("Q1",)]


def _hold_writer(path: str, ready: mp.Event, release: mp.Event) -> None:
    with store.writer_lock(path):
        ready.set()
        release.wait(30)


def test_second_writer_gets_clear_error(tmp_path: Path, tiny_store: Path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_writer, args=(str(tiny_store), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        before = tiny_store.stat().st_mtime_ns
        with pytest.raises(store.StoreLocked, match="locked by another writer"):
            build_from_tsv(tiny_store, tmp_path / "E.tsv", tmp_path / "T.tsv")
        assert tiny_store.stat().st_mtime_ns == before
    finally:
        release.set()
        holder.join(30)


def test_duckdb_writer_in_another_process_is_detected(tiny_store: Path, tmp_path: Path):
    code = (f"import duckdb,time; c=duckdb.connect({str(tiny_store)!r}); print('ready', flush=True); "
            "time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(store.StoreLocked):
            build_from_tsv(tiny_store, tmp_path / "E.tsv", tmp_path / "T.tsv")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_sql_cli_formats(tiny_store: Path, fmt: str):
    result = CliRunner().invoke(jaket_cli, ["kg", "sql", "--kg", str(tiny_store), "--format", fmt,
                                            "SELECT qid, label FROM entities ORDER BY entity_id LIMIT 2"])
    assert result.exit_code == 0, result.output
    if fmt == "json":
        assert json.loads(result.output) == [{"qid": "Q1", "label": "Sun"}, {"qid": "Q2", "label": "Earth"}]
    elif fmt == "csv":
        assert result.output.splitlines() == ["qid,label", "Q1,Sun", "Q2,Earth"]
    else:
        assert "Sun" in result.output and "(2 rows)" in result.output


def test_sql_cli_is_read_only_and_reports_errors(tiny_store: Path, tmp_path: Path):
    result = CliRunner().invoke(jaket_cli, ["kg", "sql", "--kg", str(tiny_store), "DELETE FROM entities"])
    assert result.exit_code == 2 and "read-only" in result.output.lower()
    qfile = tmp_path / "q.sql"
    qfile.write_text("SELECT count(*) AS n FROM triples")
    result = CliRunner().invoke(jaket_cli, ["kg", "sql", "--kg", str(tiny_store), "--file", str(qfile),
                                            "--format", "csv"])
    assert result.output.split() == ["n", "3"]


def test_stats_and_check_cli(tiny_store: Path):
    result = CliRunner().invoke(jaket_cli, ["kg", "stats", "--kg", str(tiny_store)])
    data = json.loads(result.output)
    assert data["entities"] == 5 and data["rejects_by_reason"]["dangling_triple_head"] == 1
    assert CliRunner().invoke(jaket_cli, ["kg", "check", "--kg", str(tiny_store)]).output.strip() == "ok"


def test_import_missing_input_writes_nothing(tmp_path: Path):
    out = tmp_path / "x.duckdb"
    result = CliRunner().invoke(jaket_cli, ["kg", "import-tsv", "--entities", str(tmp_path / "none.tsv"),
                                            "--triples", str(tmp_path / "none2.tsv"), "--out", str(out)])
    assert result.exit_code == 2 and "not found" in result.output
    assert list(tmp_path.iterdir()) == []


def test_atomic_swap_keeps_old_store_on_failure(tiny_store: Path):
    before = store.KGStore(tiny_store).counts()
    with pytest.raises(RuntimeError), store.atomic_store(tiny_store) as con:
        con.execute("INSERT INTO entities VALUES (0, 'Qx', 'x', NULL, NULL, NULL, NULL, NULL)")
        raise RuntimeError("crash in the middle of a build")
    assert store.KGStore(tiny_store).counts() == before
    assert not [p for p in tiny_store.parent.iterdir() if ".tmp-" in p.name]


def test_lock_file_is_removed(tiny_store: Path):
    with store.writer_lock(tiny_store):
        assert tiny_store.with_name(tiny_store.name + ".lock").exists()
        time.sleep(0.01)
    assert not tiny_store.with_name(tiny_store.name + ".lock").exists()


@pytest.mark.parametrize("query", sorted(q for q in (Path(__file__).parents[1] / "kg_store" / "queries").glob("*.sql")
                                        if q.stem != "pretraining_batch"),   # needs a batch file: test_jaket_batch
                         ids=lambda p: p.stem)
def test_ready_queries_run(tiny_store: Path, query: Path):
    result = CliRunner().invoke(jaket_cli, ["kg", "sql", "--kg", str(tiny_store), "--file", str(query),
                                            "--param", "qid=Q2", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    if query.stem == "entity_neighbourhood":
        assert {(r["direction"], r["other_label"]) for r in rows} == {
            ("out", "Sun"), ("out", "Moon"), ("in", "Moon")}


def test_sql_param_validation(tiny_store: Path):
    result = CliRunner().invoke(jaket_cli, ["kg", "sql", "--kg", str(tiny_store), "--param", "no-equals",
                                            "SELECT 1"])
    assert result.exit_code == 2 and "NAME=VALUE" in result.output
