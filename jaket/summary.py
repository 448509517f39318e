"""`python -m jaket.summary RUN_DIR`: loss.png path, first/last (smoothed) value of each loss, went down?"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from jaket.losses import LOSS_NAMES

NAMES = {"L_c": "entity category", "L_r": "relation", "L_t": "masked token", "L_e": "masked entity",
         "loss": "total"}


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(run_dir: str | os.PathLike) -> Path:
    """loss.png: one panel per loss (raw and smoothed), plus the total."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    keys = [k for k in (*LOSS_NAMES, "loss") if any(r.get(k) is not None for r in rows)] or ["loss"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        steps, vals = series(rows, key)
        ax.plot(steps, vals, alpha=0.35, lw=0.8, label="raw")
        if vals:
            ax.plot(steps, smooth(vals, max(1, len(vals) // 20)), lw=1.6, label="smoothed")
        ax.set_title(f"{key} ({NAMES.get(key, key)})", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(run_dir) / "loss.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summarize(run_dir: str | os.PathLike, window: int | None = None) -> dict[str, dict]:
    """{loss: {first, last, down}} with first/last = mean over the first/last `window` logged values
    (default: a tenth of the run, at least 1 and at most 50)."""
    rows = read_metrics(run_dir)
    out = {}
    for key in (*LOSS_NAMES, "loss"):
        _, vals = series(rows, key)
        if not vals:
            continue
        w = window or max(1, min(50, len(vals) // 10))
        first, last = sum(vals[:w]) / len(vals[:w]), sum(vals[-w:]) / len(vals[-w:])
        out[key] = {"first": first, "last": last, "down": last < first, "n": len(vals), "window": w}
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m jaket.summary RUN_DIR", file=sys.stderr)
        return 2
    run = Path(argv[0])
    rows = read_metrics(run)
    if not rows:
        print(f"no metrics in {run}", file=sys.stderr)
        return 1
    png = run / "loss.png"
    if not png.exists():
        png = plot_losses(run)
    print(f"loss curves: {png.resolve()}")
    print(f"steps logged: {len(rows)} (last step {rows[-1]['step']})")
    for key, s in summarize(run).items():
        verdict = "went down" if s["down"] else "did NOT go down"
        print(f"  {key:5s} {NAMES[key]:16s} first {s['first']:.4f} -> last {s['last']:.4f}  "
              f"(mean of {s['window']} logged steps)  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
