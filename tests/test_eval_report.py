"""`jaket-eval report`: one markdown table (systems x tasks) and a bar chart."""

from __future__ import annotations

import json

from click.testing import CliRunner

from jaket.evaluation.cli import main
from jaket.evaluation.report import markdown_table


def _result(system, task, headline, checkpoint="none"):
    return {"system": system, "task": task, "checkpoint": checkpoint, "headline": headline}


RESULTS = [
    _result("lm+gnn", "fewrel", {"FewRel 5-1": {"mean": 0.55, "ci95": 0.012, "n": 2000}}),
    _result("lm", "fewrel", {"FewRel 5-1": {"mean": 0.6, "ci95": 0.009, "n": 2000}}),
    _result("lm", "entity-cls", {"CoDEx-M acc": {"mean": 0.7, "ci95": 0.01, "n": 900},
                                 "CoDEx-M macro-F1": {"mean": 0.4, "ci95": None, "n": 900}}),
    _result("jaket", "fewrel", {"FewRel 5-1": {"mean": 0.61, "ci95": 0.01, "n": 2000}}, "runs/demo"),
]


def test_markdown_table_orders_systems_and_fills_gaps():
    table = markdown_table(RESULTS).splitlines()
    assert table[0] == "| system | FewRel 5-1 | CoDEx-M acc | CoDEx-M macro-F1 |"
    assert table[2] == "| lm | 60.0 ± 0.9 | 70.0 ± 1.0 | 40.0 |"
    assert table[3] == "| lm+gnn | 55.0 ± 1.2 | - | - |"
    assert table[4].startswith("| jaket (runs/demo) | 61.0 ± 1.0 |")


def test_report_command_prints_table_and_writes_png(tmp_path):
    paths = []
    for i, r in enumerate(RESULTS):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        paths.append(str(p))
    png = tmp_path / "out" / "chart.png"
    res = CliRunner().invoke(main, ["report", *paths, "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert "| lm | 60.0 ± 0.9 |" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
