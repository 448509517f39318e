"""`jaket-eval`: fine-tuning / evaluation of the four systems on unseen KGs.

    jaket-eval --task fewrel|metaqa|entity-cls --checkpoint RUN_DIR|none [--system lm|lm+gnn|lm+gnn+m|jaket]
               --out RESULTS.json [--data ../shared/data] [--work kg_store/eval]
    jaket-eval report RESULTS.json... [--png results.png]     one markdown table + a bar chart
    jaket-eval kgs [--data ...] [--work ...]                  build (or find cached) the eval KG stores
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from jaket.evaluation.systems import SYSTEMS

TASKS = ("fewrel", "metaqa", "entity-cls")
DEFAULT_DATA = os.environ.get("JAKET_EVAL_DATA", "../shared/data")


@click.group(invoke_without_command=True)
@click.option("--task", type=click.Choice(TASKS), default=None)
@click.option("--checkpoint", default="none", show_default=True, help="a jaket-train run dir, or 'none'")
@click.option("--system", type=click.Choice(SYSTEMS), default=None,
              help="default: jaket with a run dir, lm with 'none'")
@click.option("--out", default=None, help="RESULTS.json to write")
@click.option("--data", default=DEFAULT_DATA, show_default=True, help="the shared data folder (eval/, labels/)")
@click.option("--work", default="kg_store/eval", show_default=True, help="eval KG stores and feature cache")
@click.option("--lm", default="default", show_default=True, help="encoder of the baselines")
@click.option("--seed", default=0, show_default=True)
@click.option("--episodes", default=1000, show_default=True, help="FewRel test episodes per fold (2 folds)")
@click.option("--adapt-steps", default=300, show_default=True, help="FewRel adapter training episodes")
@click.option("--train-questions", default=2000, show_default=True, help="MetaQA dev questions for training")
@click.option("--test-questions", default=1000, show_default=True, help="MetaQA test questions per setting")
@click.option("--epochs", default=10, show_default=True, help="MetaQA scorer training epochs")
@click.option("--threads", default=None, type=int, help="torch threads (default: torch's choice)")
@click.pass_context
def main(ctx: click.Context, task: str | None, checkpoint: str, system: str | None, out: str | None, data: str,
         work: str, lm: str, seed: int, episodes: int, adapt_steps: int, train_questions: int,
         test_questions: int, epochs: int, threads: int | None) -> None:
    """Evaluate one system on one task (or use a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    if task is None or out is None:
        raise click.UsageError("give --task and --out (or a subcommand: report, kgs)")
    import torch

    from jaket.evaluation import tasks
    from jaket.evaluation.systems import EvalSystem

    if threads:
        torch.set_num_threads(threads)
    system = system or ("lm" if checkpoint == "none" else "jaket")
    data_p, work_p = Path(data), Path(work)
    if not (data_p / "eval").is_dir():
        raise click.UsageError(f"--data {data}: no eval/ folder there")
    t0 = time.perf_counter()
    try:
        sys_ = EvalSystem(system, checkpoint, lm=lm, seed=seed, work=work_p)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if task == "fewrel":
        result = tasks.run_fewrel(sys_, data_p, work_p, episodes=episodes, seed=seed, adapt_steps=adapt_steps)
    elif task == "metaqa":
        result = tasks.run_metaqa(sys_, data_p, work_p, train_questions=train_questions,
                                  test_questions=test_questions, seed=seed, epochs=epochs)
    else:
        result = tasks.run_entity_cls(sys_, data_p, work_p, seed=seed)
    result = {"task": task, "system": system, "checkpoint": checkpoint, "seed": seed, **result,
              "wall_seconds": round(time.perf_counter() - t0, 1), "torch_threads": torch.get_num_threads(),
              "host": platform.node(), "finished": datetime.now(UTC).isoformat(timespec="seconds")}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    from jaket.evaluation.report import markdown_table

    click.echo(markdown_table([result]))
    click.echo(f"({task}, {system}: {result['wall_seconds']} s) -> {out}")


@main.command()
@click.argument("results", nargs=-1, required=True)
@click.option("--png", default="benchmarks/results/eval.png", show_default=True, help="bar chart to write")
def report(results: tuple[str, ...], png: str) -> None:
    """Print one markdown table (systems x tasks) of RESULTS.json files and write a bar chart."""
    from jaket.evaluation.report import bar_chart, load_results, markdown_table

    loaded = load_results(list(results))
    click.echo(markdown_table(loaded))
    click.echo(f"\n(chart: {bar_chart(loaded, png)})", err=True)


@main.command()
@click.option("--data", default=DEFAULT_DATA, show_default=True)
@click.option("--work", default="kg_store/eval", show_default=True)
@click.option("--seed", default=0, show_default=True, help="seed of the 50% MetaQA KG")
def kgs(data: str, work: str, seed: int) -> None:
    """Build the evaluation KG stores (cached by input checksum) and print their coverage."""
    from pipelines.eval_kgs import KG_NAMES, build_eval_kg, coverage

    for name in KG_NAMES:
        t0 = time.perf_counter()
        path = build_eval_kg(name, Path(data), Path(work), seed=seed)
        click.echo(json.dumps({"kg": name, "store": str(path), "seconds": round(time.perf_counter() - t0, 1),
                               **coverage(path)}))


if __name__ == "__main__":
    sys.exit(main())
