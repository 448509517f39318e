"""The `build-kg` flow end to end on the bundled miniwiki sample: counts of expected.json, hand-checkable
examples, resume after a real SIGKILL, clear errors, and the `jaket-build-kg` CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kg_store import store

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
WIKIDATA = SAMPLE / "mini-wikidata-all.json.bz2"
WIKIPEDIA = SAMPLE / "mini-enwiki-pages-articles.xml.bz2"
EXPECTED = json.loads((SAMPLE / "expected.json").read_text())
BUILD_CLI = [sys.executable, "-m", "flows.cli"]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_HOME=str(tmp / ".prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_LOGGING_LEVEL="WARNING")
    env.pop("PREFECT_API_URL", None)
    return env


def build(out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = BUILD_CLI + ["--wikidata", str(WIKIDATA), "--wikipedia", str(WIKIPEDIA), "--out", str(out), *extra]
    return subprocess.run(cmd, cwd=REPO, env=_env(out.parent), capture_output=True, text=True, check=check,
                          timeout=600)


def oracle_triples() -> tuple[int, int, int]:
    """Independent count from the raw dump with the stdlib: (statements with both ends present,
    the same without deprecated rank, distinct (s, p, o) without deprecated rank)."""
    import bz2

    items, claims = set(), []
    with bz2.open(WIKIDATA, "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.strip().rstrip(",")
            if not line.startswith("{"):
                continue
            entity = json.loads(line)
            if entity["type"] != "item":
                continue
            items.add(entity["id"])
            for statements in entity["claims"].values():
                for st in statements:
                    snak = st["mainsnak"]
                    if snak.get("datatype") == "wikibase-item" and snak["snaktype"] == "value":
                        value = snak["datavalue"]["value"]
                        tail = value.get("id") or f"Q{value['numeric-id']}"
                        claims.append((entity["id"], snak["property"], tail, st["rank"]))
    both = [c for c in claims if c[0] in items and c[2] in items]
    kept = [c[:3] for c in both if c[3] != "deprecated"]
    return len(both), len(kept), len(set(kept))


@pytest.fixture(scope="module")
def mini_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "wiki.duckdb"
    result = build(out)
    assert "store written" in result.stdout, result.stderr[-3000:]
    return out


def test_counts_match_expected(mini_store: Path):
    counts = EXPECTED["counts"]
    with store.KGStore(mini_store) as s:
        c = s.counts()
        meta = s.meta()
        assert c["entities"] == counts["items"]
        # expected.json counts deprecated statements too; the store skips them (the issue: skip deprecated rank)
        both, kept, distinct = oracle_triples()
        assert both == counts["triples_with_both_ends_present"]
        assert int(meta["triples_both_ends_present"]) == kept
        assert c["triples"] == distinct
        assert c["documents"] == counts["articles"]
        assert s.scalar("SELECT count(*) FROM documents WHERE entity_id IS NOT NULL") == \
            counts["articles_with_subject_item"]
        assert s.scalar("SELECT count(*) FROM mentions WHERE source = 'anchor'") == counts["linked_mentions"]
        assert s.scalar("SELECT count(DISTINCT entity_id) FROM mentions WHERE source = 'anchor'") == \
            counts["linked_mentions_distinct_qids"]
        assert s.scalar("SELECT count(*) FROM entities WHERE label IS NOT NULL") == counts["items_with_en_label"]
        assert s.scalar("SELECT count(DISTINCT entity_id) FROM aliases") >= counts["items_with_en_aliases"]
        # every entity without an English label is reported (kept, with a fallback)
        assert s.scalar("SELECT count(*) FROM rejects WHERE reason = 'no_english_label' AND action = 'kept' "
                        "AND raw LIKE '{\"type\":\"item\"%'") == counts["items_without_en_label"]
        assert int(meta["dangling_triples"]) == s.scalar(
            "SELECT count(*) FROM rejects WHERE reason LIKE 'dangling_triple%'") > 0
        assert store.check_integrity(s.con) == []


def test_hand_checkable_examples(mini_store: Path):
    with store.KGStore(mini_store) as s:
        for ex in EXPECTED["examples"]:
            m, t = ex["mention"], ex["triple"]
            assert s.query("SELECT label FROM entities WHERE qid = ?", [m["qid"]]) == [(m["qid_label"],)]
            assert s.scalar("SELECT count(*) FROM triples_labelled WHERE head_qid = ? AND pid = ? AND tail_qid = ?",
                            [t["subject"], t["property"], t["object"]]) == 1
            assert s.scalar("SELECT relation_label FROM triples_labelled WHERE pid = ? LIMIT 1",
                            [t["property"]]) == t["property_label"]
            rows = s.query("SELECT surface, source FROM mentions_in_context WHERE title = ? AND qid = ?",
                           [ex["article_title"], m["qid"]])
            assert (m["anchor"], "anchor") in rows
            doc_entity = s.scalar("SELECT e.qid FROM documents d JOIN entities e USING (entity_id) WHERE title = ?",
                                  [ex["article_title"]])
            assert doc_entity == ex["article_subject_qid"]


def test_mentions_slice_to_their_surface(mini_store: Path):
    with store.KGStore(mini_store) as s:
        bad = s.scalar("SELECT count(*) FROM mentions_in_context WHERE length(surface) <> char_end - char_start "
                       "OR surface <> trim(surface) OR surface = ''")
        assert bad == 0
        overlaps = s.scalar("""SELECT count(*) FROM mentions a JOIN mentions b USING (passage_id)
                               WHERE a.source = 'anchor' AND b.source <> 'anchor'
                                 AND a.char_start < b.char_end AND b.char_start < a.char_end""")
        assert overlaps == 0


def test_redirect_resolved(mini_store: Path):
    with store.KGStore(mini_store) as s:
        # a mention written as [[U.S.]] goes through the redirect 'U.S.' -> United States (Q30)
        via = [r for r in EXPECTED["redirects"] if r["title"] in ("U.S.", "Second World War")]
        assert via
        for r in via:
            assert s.scalar("SELECT count(*) FROM mentions_in_context WHERE qid = ? AND surface = ? "
                            "AND source = 'anchor'", [r["qid"], r["title"]]) >= 1


def test_descriptions(mini_store: Path):
    with store.KGStore(mini_store) as s:
        src = dict(s.query("SELECT desc_source, count(*) FROM entities GROUP BY ALL"))
        assert src["wikipedia"] >= 95          # the article subjects (101) with a non-empty lead
        assert src["wikidata"] >= 18000
        darmstadt = s.query("SELECT description, desc_source, desc_mention_start, desc_mention_end "
                            "FROM entities WHERE qid = 'Q2973'")[0]
        assert darmstadt[1] == "wikidata" and darmstadt[0] == "Darmstadt, city in Hessen, Germany"
        assert darmstadt[0][darmstadt[2]:darmstadt[3]] == "Darmstadt"
        lead, source, a, b = s.query("SELECT description, desc_source, desc_mention_start, desc_mention_end "
                                     "FROM entities WHERE qid = 'Q213610'")[0]
        assert source == "wikipedia" and lead.startswith("Louis IX")
        assert (a, lead[a:b]) == (0, "Louis IX of Hesse-Darmstadt")   # a redirect title of its article


def test_categories_collapsed(mini_store: Path):
    with store.KGStore(mini_store) as s:
        assert s.num_categories == 100
        top = s.query("SELECT label FROM categories ORDER BY category_id LIMIT 1")[0][0]
        assert top == "human"
        assert s.scalar("SELECT count(*) FROM entities WHERE category_id IS NOT NULL") > 5000


def test_rerun_skips_finished_stages_and_keeps_result(mini_store: Path, tmp_path: Path):
    out = tmp_path / "copy.duckdb"
    shutil.copytree(mini_store.with_name(mini_store.name + ".work"), tmp_path / "copy.duckdb.work")
    t0 = time.perf_counter()
    result = build(out)
    assert result.returncode == 0
    with store.KGStore(out) as a, store.KGStore(mini_store) as b:
        assert store.table_checksums(a.con) == store.table_checksums(b.con)
    assert time.perf_counter() - t0 < 120


def test_killed_build_resumes_to_identical_store(mini_store: Path, tmp_path: Path):
    """SIGKILL the build right after its first stage finished, rerun: same store as uninterrupted."""
    out = tmp_path / "killed.duckdb"
    cmd = BUILD_CLI + ["--wikidata", str(WIKIDATA), "--wikipedia", str(WIKIPEDIA), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    marker = tmp_path / "killed.duckdb.work" / "wikidata" / "_SUCCESS"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists() and not out.exists()
    finished = marker.read_text()
    build(out)
    assert marker.read_text() == finished       # the finished stage was skipped, not redone
    with store.KGStore(out) as a, store.KGStore(mini_store) as b:
        assert store.table_checksums(a.con) == store.table_checksums(b.con)


def test_missing_input_is_one_line_error(tmp_path: Path):
    out = tmp_path / "x.duckdb"
    result = subprocess.run(BUILD_CLI + ["--wikidata", str(tmp_path / "missing.json.bz2"), "--out", str(out)],
                            cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"jaket-build-kg: error: input file not found: {tmp_path / 'missing.json.bz2'}"]
    assert not out.exists()


def test_locked_store_is_one_line_error(mini_store: Path, tmp_path: Path):
    code = f"import duckdb,time; c=duckdb.connect({str(mini_store)!r}); print('ready', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = mini_store.stat().st_mtime_ns
        result = build(mini_store, check=False)
        assert result.returncode == 2
        assert result.stderr.strip() == f"jaket-build-kg: error: store is locked by another writer: {mini_store}"
        assert mini_store.stat().st_mtime_ns == before
    finally:
        holder.kill()
        holder.wait()


# --- sharded ingestion: kill mid-stage, a second writer, a failing shard on Dask ------------------------------


def _sharded_cmd(out: Path, *extra: str) -> list[str]:
    return BUILD_CLI + ["--wikidata", str(WIKIDATA), "--wikipedia", str(WIKIPEDIA), "--out", str(out), *extra]


def _successes(stage_dir: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(stage_dir.glob("shard-*/_SUCCESS"))}


class _Watched:
    """A build process whose log lines are read as they come (the pipe never fills)."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        import threading

        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while not any(text in line for line in list(self.lines)):
            assert self.proc.poll() is None and time.time() < deadline, "".join(self.lines[-30:])
            time.sleep(0.05)

    def finish(self, timeout: float = 600) -> str:
        self.proc.wait(timeout)
        self._reader.join(30)
        return "".join(self.lines)


def test_killed_sharded_build_resumes_and_refuses_a_second_writer(mini_store: Path, tmp_path: Path):
    """(1) SIGKILL in the middle of the sharded wikidata stage, after some shards finished; (2) rerun it and,
    while it holds the store (stopped with SIGSTOP), start a second writer: it fails with a one-line error; the
    first then finishes intact, skipping the finished shards, with the same store as an uninterrupted build."""
    out = tmp_path / "sharded.duckdb"
    shards = tmp_path / "sharded.duckdb.work" / "wikidata"
    proc = subprocess.Popen(_sharded_cmd(out, "--shards", "6"), cwd=REPO, env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (shards / "shard-0001" / "_SUCCESS").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _successes(shards)
    assert 2 <= len(finished) < 6 and not (shards / "_SUCCESS").exists() and not out.exists()

    env = dict(_env(tmp_path), PREFECT_LOGGING_LEVEL="INFO")
    first = _Watched(_sharded_cmd(out, "--shards", "6"), env)
    first.wait_for("Beginning subflow run")          # inside the flow: the store's writer lock is held
    os.killpg(first.proc.pid, signal.SIGSTOP)
    try:
        second = build(out, "--shards", "6", check=False)
    finally:
        os.killpg(first.proc.pid, signal.SIGCONT)
    assert second.returncode == 2
    assert second.stderr.strip() == f"jaket-build-kg: error: store is locked by another writer: {out}"
    log = first.finish()
    assert first.proc.returncode == 0, log[-3000:]
    after = _successes(shards)
    assert len(after) == 6 and {k: after[k] for k in finished} == finished   # finished shards were skipped
    assert sum("shard-0000: up to date" in line for line in log.splitlines()) == 1
    with store.KGStore(out) as a, store.KGStore(mini_store) as b:
        assert store.table_checksums(a.con) == store.table_checksums(b.con)


def test_failing_shard_is_retried_reported_and_redone_alone(mini_store: Path, tmp_path: Path):
    """Wikidata shard 1 fails once (retried, then fine); wikidata shard 2 and wikipedia shard 3 keep failing:
    logged and named with their byte ranges in the final error (exit 3) and as `shard_failed` rejects of the
    store built without them. A rerun redoes only those two and gives the same store as an uninterrupted
    one-shard build."""
    from pipelines.shards import plan_shards

    out = tmp_path / "failing.duckdb"
    work = tmp_path / "failing.duckdb.work"
    env = dict(_env(tmp_path), PREFECT_LOGGING_LEVEL="INFO", JAKET_FAIL_SHARD="1:1,2,wikipedia/3")
    cmd = _sharded_cmd(out, "--shards", "4", "--shard-retries", "1")
    run = subprocess.run(cmd + ["--workers", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 3, log[-3000:]
    wd = plan_shards(WIKIDATA, 4, tmp_path / "index", "k").shards[2]
    wp = plan_shards(WIKIPEDIA, 4, tmp_path / "index", "k").shards[3]
    errors = [line for line in run.stderr.splitlines() if line.startswith("jaket-build-kg: error:")]
    assert len(errors) == 1 and errors[0].startswith("jaket-build-kg: error: 2 shard(s) kept failing")
    error = errors[0]
    for stage, shard in (("wikidata", wd), ("wikipedia", wp)):
        assert f"{stage} shard {shard.index} of 4, bytes [{shard.start:,}, {shard.end:,})" in error
        assert f"stage {stage}: {shard.describe()} failed after 2 attempt(s)" in log
    assert "wikidata shard 1 fails on attempt 1" in log and "Retry 1/1" in log
    assert json.loads((work / "wikidata" / "shard-0001" / "_SUCCESS").read_text())["stats"]["attempt"] == 2
    with store.KGStore(out) as s:
        assert sorted(s.query("SELECT stage, position FROM rejects WHERE reason = 'shard_failed'")) == [
            ("wikidata", f"bytes {wd.start}-{wd.end}"), ("wikipedia", f"bytes {wp.start}-{wp.end}")]
        assert 0 < s.counts()["entities"] < EXPECTED["counts"]["items"]
    kept = {stage: _successes(work / stage) for stage in ("wikidata", "wikipedia")}
    assert sorted(kept["wikidata"]) == ["shard-0000", "shard-0001", "shard-0003"]
    assert sorted(kept["wikipedia"]) == ["shard-0000", "shard-0001", "shard-0002"]

    rerun = subprocess.run(cmd, cwd=REPO, env=dict(env, JAKET_FAIL_SHARD=""), capture_output=True, text=True,
                           timeout=600)
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log[-3000:]
    started = sorted(line.split("stage ")[1].split(":")[0] for line in log.splitlines()
                     if "shard-" in line and ": started" in line)
    assert started == ["wikidata shard-0002", "wikipedia shard-0003"]
    for stage in ("wikidata", "wikipedia"):
        after = _successes(work / stage)
        assert len(after) == 4 and {k: after[k] for k in kept[stage]} == kept[stage]
    with store.KGStore(out) as a, store.KGStore(mini_store) as b:
        assert store.table_checksums(a.con) == store.table_checksums(b.con)


@pytest.mark.slow
def test_dask_local_cluster_builds_the_same_store(mini_store: Path, tmp_path: Path):
    """`--task-runner dask`: shards run in 2 Dask worker processes (one shard retried there after a failure),
    report to the flow's Prefect API, and give the same store as the one-shard build."""
    out = tmp_path / "dask.duckdb"
    env = dict(_env(tmp_path), PREFECT_LOGGING_LEVEL="INFO", JAKET_FAIL_SHARD="1:1")
    proc = subprocess.Popen(_sharded_cmd(out, "--task-runner", "dask", "--workers", "2", "--shards", "4"),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]
    assert "Creating a new Dask cluster" in log and "Retry 1/2" in log
    assert log.count("Starting temporary server") == 1        # the workers use the flow's API
    pids = {json.loads(p.read_text())["stats"]["pid"]
            for p in (tmp_path / "dask.duckdb.work" / "wikidata").glob("shard-*/_SUCCESS")}
    assert 1 <= len(pids) <= 2 and proc.pid not in pids        # worker processes (2), not the flow's
    with store.KGStore(out) as a, store.KGStore(mini_store) as b:
        assert store.table_checksums(a.con) == store.table_checksums(b.con)
