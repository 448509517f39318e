"""Progress for long operations: a tqdm bar (rate, ETA) on a terminal, plain periodic log lines elsewhere (CI,
log files, Prefect workers), where a bar's carriage returns turn into one unreadable line."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("jaket.progress")
LOG_EVERY_S = float(os.environ.get("JAKET_PROGRESS_EVERY", "30"))


class LogProgress:
    """The subset of tqdm's interface used here, reporting `desc: n/total (pct) rate, ETA` every
    `every` seconds and once at the end, through `logging` (and stderr when logging is not configured)."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, every: float | None = None, unit_scale: bool = False,
                 **_: Any) -> None:
        self.iterable, self.desc, self.unit, self.unit_scale = iterable, desc, unit, unit_scale
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.start_n = total, initial, initial
        self.every = LOG_EVERY_S if every is None else every
        self.started = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, values: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._emit()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (self.n - self.start_n) / elapsed
        text = f"{self.desc}: {self._num(self.n)}"
        if self.total:
            text += f"/{self._num(self.total)} ({100 * self.n / self.total:.0f}%)"
            if rate > 0:
                text += f", ETA {max(self.total - self.n, 0) / rate:,.0f}s"
        text += f", {self._num(rate, 1)} {self.unit}/s, {elapsed:,.0f}s elapsed"
        return text + (f" [{self.postfix}]" if self.postfix else "")

    def _num(self, value: float, digits: int = 0) -> str:
        """1,234,567 or, with unit_scale (as tqdm), 1.23M."""
        if self.unit_scale:
            for prefix in ("", "k", "M", "G", "T"):
                if abs(value) < 1000 or prefix == "T":
                    return f"{value:.0f}" if not prefix else f"{value:.2f}{prefix}"
                value /= 1000
        return f"{value:,.{digits}f}"

    def _emit(self) -> None:
        if logging.getLogger().handlers or log.handlers:
            log.info(self.line())
        else:
            print(self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit()


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Any:
    """tqdm on a terminal (stderr is a TTY), LogProgress otherwise; same arguments as tqdm."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    return LogProgress(iterable, **kwargs)
