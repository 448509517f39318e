"""Results JSONs -> one markdown table (systems x task columns) and a grouped bar chart PNG."""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM_ORDER = ("lm", "lm+gnn", "lm+gnn+m", "jaket")


def load_results(paths: list[str | Path]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def collect(results: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    """(systems, columns, {(system, column): {"mean", "ci95", "n"}}) in a stable order."""
    cells: dict[tuple[str, str], dict] = {}
    systems: list[str] = []
    columns: list[str] = []
    for r in results:
        name = r["system"] if r.get("checkpoint", "none") == "none" else f"{r['system']} ({r['checkpoint']})"
        if name not in systems:
            systems.append(name)
        for col, cell in r.get("headline", {}).items():
            if col not in columns:
                columns.append(col)
            cells[(name, col)] = cell
    rank = {s: i for i, s in enumerate(SYSTEM_ORDER)}
    systems.sort(key=lambda s: (rank.get(s.split(" ")[0], 99), s))
    return systems, columns, cells


def fmt(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    text = f"{100 * cell['mean']:.1f}"
    if cell.get("ci95") is not None:
        text += f" ± {100 * cell['ci95']:.1f}"
    return text


def markdown_table(results: list[dict]) -> str:
    systems, columns, cells = collect(results)
    lines = ["| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for s in systems:
        lines.append(f"| {s} | " + " | ".join(fmt(cells.get((s, c))) for c in columns) + " |")
    return "\n".join(lines)


def bar_chart(results: list[dict], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems, columns, cells = collect(results)
    x = np.arange(len(columns))
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(columns) + 2), 4.5))
    for i, s in enumerate(systems):
        means = [100 * (cells.get((s, c)) or {}).get("mean", np.nan) or np.nan for c in columns]
        errs = [100 * ((cells.get((s, c)) or {}).get("ci95") or 0.0) for c in columns]
        ax.bar(x + (i - (len(systems) - 1) / 2) * width, means, width, yerr=errs, label=s, capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels(columns, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% (accuracy / Hits@1 / macro-F1)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("jaket-eval: systems x tasks")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
