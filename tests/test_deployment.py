"""The README's deployment recipe, once: a local Prefect server on 127.0.0.1, `python -m flows.serve`, and
`prefect deployment run build-kg/<name> --watch` builds a store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kg_store import store

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("prefect server did not become healthy")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_deployment_run_builds_store(tmp_path: Path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / ".prefect"), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING")
    out = tmp_path / "deployed.duckdb"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    serve = None
    try:
        _wait_healthy(api, server, 180)
        serve = subprocess.Popen([sys.executable, "-m", "flows.serve", "--name", "ci"], cwd=REPO, env=env,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        run_cmd = [PREFECT, "deployment", "run", "build-kg/ci", "--watch",
                   "--param", f"wikidata={REPO / 'data/sample/mini-wikidata-all.json.bz2'}",
                   "--param", f"out={out}"]
        deadline = time.time() + 120
        while True:  # the deployment exists once flows.serve has registered it
            result = subprocess.run(run_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
            if result.returncode == 0 or time.time() > deadline or "not found" not in result.stdout.lower():
                break
            time.sleep(2)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "Completed" in result.stdout
        with store.KGStore(out) as s:
            assert s.num_entities == 20000
            assert s.scalar("SELECT count(*) FROM triples") == 109612   # distinct, deprecated rank skipped
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
        log.close()
