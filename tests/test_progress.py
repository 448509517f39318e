"""Progress output: plain periodic lines with rate and ETA when stderr is not a terminal."""

from __future__ import annotations

import logging

from pipelines.progress import LogProgress, progress


def test_non_tty_gives_log_lines(caplog, capsys):
    caplog.set_level(logging.INFO, logger="jaket.progress")
    bar = progress(total=10, desc="memory", unit="desc", every=0.0)   # pytest's stderr is not a TTY
    assert isinstance(bar, LogProgress)
    bar.update(4)
    bar.set_postfix({"L_c": "1.000"})
    bar.update(6)
    bar.close()
    bar.close()   # idempotent
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("memory: 4/10 (40%), ETA ") and "desc/s" in lines[0]
    assert lines[-1].startswith("memory: 10/10 (100%), ETA 0s") and lines[-1].endswith("[L_c=1.000]")


def test_iterable_and_interval(caplog):
    caplog.set_level(logging.INFO, logger="jaket.progress")
    assert list(LogProgress(range(5), desc="x", every=3600)) == [0, 1, 2, 3, 4]
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["x: 5/5 (100%)"]   # only the final line
