"""`jaket-train`: JAKET pretraining on a KG store (DESIGN.md part 2 contract).

RUN_DIR gets model.safetensors, memory.safetensors, config.json, metrics.jsonl, loss.png, plus the resume
state (optimizer.safetensors, rng.safetensors [+ rng-rank<r>.safetensors per extra DDP rank],
trainer_state.json, written atomically as one checkpoint) and lm/ (encoder config + tokenizer).
Multi-process: `torchrun --nproc_per_node N -m jaket.train ...` or `jaket-train --nproc N ...` (distributed.py).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import click
import torch

from jaket import distributed as dist
from jaket.checkpoint import load_optimizer, load_rng, save_optimizer, write_json
from jaket.checkpoint_commit import commit, recover
from jaket.losses import LOSS_NAMES, LossWeights
from jaket.memory import EntityMemory, RefreshSchedule
from jaket.model import JAKETConfig, JAKETModel
from jaket.pretrain import Pretrainer, TrainConfig, autocast_context, lr_factor, make_optimizer


def pick_threads(spec: str | int, share: int = 1) -> int:
    """torch intra-op threads: an int, or 'auto' = the cores not already busy (1-minute load average), at least
    1, divided among `share` processes of this machine (DDP ranks). On a shared box torch's extra threads
    spin-wait against other jobs: measured here under a load of ~5 on 2 cores, one thread ran a MiniLM training
    step 5x faster (1.5 s against 7.8 s)."""
    if str(spec) != "auto":
        return max(1, int(spec))
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(torch.get_num_threads(), int(cores - busy + 0.5) // max(1, share)))


class _KeepArgs(click.Command):
    """Keeps the raw arguments (ctx.meta['argv']) so that --nproc can re-launch the same command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["argv"] = list(args)
        return super().parse_args(ctx, args)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _descriptions(store: object, tokenizer: object, mcfg: JAKETConfig) -> tuple:
    from jaket.tokens import cached_tokenize, relation_rows

    ent = cached_tokenize(store.path, "entity", tokenizer, store.entity_descriptions(), mcfg.desc_max_len)
    rel = cached_tokenize(store.path, "relation", tokenizer, relation_rows(store), mcfg.desc_max_len)
    return ent, rel


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        click.echo(msg, err=True)


def train(kg: str | os.PathLike, out: str | os.PathLike, tcfg: TrainConfig | None = None,
          mcfg: JAKETConfig | None = None, resume: bool = False, stop_after: int | None = None,
          progress: bool = True, quiet: bool = False, time_limit: float | None = None,
          overrides: dict | None = None) -> Path:
    """Pretrain (or resume when `resume`, reading out/config.json). Returns the run directory.
    `time_limit` (seconds of training, setup excluded) stops and saves early, like `stop_after`; a resume
    continues the same schedule. `overrides` replaces TrainConfig fields on resume (steps, device, precision).
    Under torchrun (WORLD_SIZE > 1) every rank calls this: see jaket/distributed.py for what is sharded."""
    from jaket.lm import checkpoint_has_mlm_head, load_tokenizer, resolve_lm
    from jaket.tokens import cache_dir
    from kg_store.store import KGStore

    out = Path(out)
    start = 0
    if resume:
        saved = json.loads((out / "config.json").read_text())
        tcfg = TrainConfig.from_dict({**saved["train"], **(overrides or {})})
        mcfg = JAKETConfig.from_dict(saved["model"])
    tcfg = tcfg or TrainConfig()
    mcfg = mcfg or JAKETConfig()
    env = dist.setup(tcfg.device)
    quiet, progress = quiet or not env.is_main, progress and env.is_main
    device = dist.device_for(env, tcfg.device)
    if env.is_main and out.exists():
        state = recover(out)
        if state != "none":
            _say(f"an interrupted checkpoint write was {state}", quiet)
    dist.barrier(env)
    store = KGStore(kg)
    t0 = time.perf_counter()
    if resume:
        trainer_state = json.loads((out / "trainer_state.json").read_text())
        start = trainer_state["step"]
        tokenizer = load_tokenizer(out / "lm")
        model = JAKETModel.load(out, device)
        memory = EntityMemory.load(out / "memory.safetensors", device)
        ent_tokens, _ = _descriptions(store, tokenizer, mcfg)
    else:
        torch.manual_seed(tcfg.seed)
        counts = store.counts()
        mcfg.num_entities, mcfg.num_relations = counts["entities"], counts["relations"]
        mcfg.num_categories = counts["categories"]
        mcfg.extra = {**mcfg.extra, "fresh_mlm_head": not checkpoint_has_mlm_head(resolve_lm(mcfg.lm)),
                      "lm_path": resolve_lm(mcfg.lm)}
        tokenizer = load_tokenizer(mcfg.lm)
        model = JAKETModel.from_lm(mcfg).to(device)
        if env.rank:
            torch.manual_seed(tcfg.seed + env.rank)    # this rank's own dropout stream (rank 0: unchanged)
        ent_tokens, rel_tokens = _descriptions(store, tokenizer, mcfg)
        _say(f"memory: encoding {len(ent_tokens)} entity descriptions with LM1 "
             f"({env.world_size} rank(s)) ...", quiet)
        tb = time.perf_counter()
        memory = dist.build_memory(env, cache_dir(store.path), model.lm, ent_tokens, rel_tokens,
                                   int(tokenizer.pad_token_id), tcfg.refresh, tcfg.batch_tokens, progress=progress)
        memory.entity, memory.relation = memory.entity.to(device), memory.relation.to(device)
        mcfg.extra["memory_build_s"] = round(time.perf_counter() - tb, 3)
        if mcfg.num_relations:
            model.km.set_relations(memory.relation)       # R initialised from relation descriptions
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
            tokenizer.save_pretrained(out / "lm")
            (out / "metrics.jsonl").write_text("")
    model.train()
    encoder = dist.ShardedEncoder(env) if env.distributed else None
    trainer = Pretrainer(model, tokenizer, store, memory, ent_tokens, tcfg, rank=env.rank, encode=encoder)
    optimizer = make_optimizer(model, tcfg)
    step_fn = dist.wrap_step(model, trainer.losses, env, device)
    if resume:
        load_optimizer(optimizer, out / "optimizer.safetensors")
        rng = out / _rng_name(env.rank)
        if rng.exists():
            load_rng(rng, {"sampler": trainer.generator})
        else:                                          # resumed on more ranks than it was saved with
            trainer.generator.manual_seed(tcfg.seed + env.rank + 7919 * start)
        if env.is_main:
            _truncate_metrics(out / "metrics.jsonl", start)
    config = {"model": mcfg.to_dict(), "train": tcfg.to_dict(), "kg": str(Path(kg).resolve())}
    if env.is_main:
        write_json(out / "config.json", config)
    ranks = f" x {env.world_size} ranks ({env.backend})" if env.distributed else ""
    _say(f"setup {time.perf_counter() - t0:.1f}s; training steps {start}..{tcfg.steps} on {device}{ranks}", quiet)

    end = tcfg.steps if stop_after is None else min(tcfg.steps, stop_after)
    bar = None
    if progress:
        from pipelines.progress import progress as progress_bar

        bar = progress_bar(total=tcfg.steps, initial=start, desc="jaket-train", unit="step", dynamic_ncols=True)
    metrics = open(out / "metrics.jsonl", "a") if env.is_main else None
    step = start
    t_train = time.perf_counter()
    deadline = t_train + time_limit if time_limit else None
    autocast = autocast_context(device, tcfg.precision)
    try:
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, tcfg)
            with autocast():
                total, logged, info = step_fn(step)
            loss, logged = dist.reduce_losses(total, logged, env)       # averaged over ranks
            if not math.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {step}: {logged}")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if tcfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
            optimizer.step()
            done = step + 1
            if metrics is not None and (done % tcfg.log_every == 0 or done == end):
                row = {"step": done, "loss": loss, **logged, "lr": optimizer.param_groups[0]["lr"],
                       "refresh": info["refresh"], "nodes": info["nodes"], "edges": info["edges"],
                       "time": round(time.perf_counter() - t_train, 4)}
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in logged.items() if v is not None}, refresh=False)
            if deadline is not None and done < end and dist.broadcast_flag(time.perf_counter() > deadline, env):
                _say(f"\ntime limit reached after step {done}: saving (resume with --resume {out})", quiet)
                end = done
                break
            if tcfg.save_every and done % tcfg.save_every == 0 and done < end:
                _save(out, model, memory, optimizer, trainer, done, env)
        step = end
    except KeyboardInterrupt:
        if env.distributed:       # ranks stop at different points: no collective save; the last one is kept
            _say(f"\ninterrupted: the last checkpoint is kept (resume with --resume {out})", quiet)
        else:
            _say(f"\ninterrupted: saving the state after step {step} (resume with --resume {out})", quiet)
            _save(out, model, memory, optimizer, trainer, step, env)
        raise
    finally:
        if metrics is not None:
            metrics.close()
        if bar is not None:
            bar.close()
    _save(out, model, memory, optimizer, trainer, step, env)
    elapsed = time.perf_counter() - t_train
    if end > start:
        _say(f"{end - start} steps in {elapsed:.1f}s ({(end - start) / max(elapsed, 1e-9):.2f} steps/s); "
             f"memory refreshes so far: {memory.refreshes}", quiet)
    store.close()
    return out


def _rng_name(rank: int) -> str:
    """Rank 0 keeps the 1-process name; rank r > 0 saves rng-rank<r>.safetensors."""
    return "rng.safetensors" if rank == 0 else f"rng-rank{rank}.safetensors"


def _save(out: Path, model: JAKETModel, memory: EntityMemory, optimizer: torch.optim.Optimizer,
          trainer: Pretrainer, step: int, env: dist.DistEnv | None = None) -> None:
    """An atomic checkpoint (jaket/checkpoint_commit.py), written by rank 0 only; every rank's RNG state is
    gathered to rank 0 first, and all ranks wait until the checkpoint is on disk."""
    from safetensors.torch import save_file

    from jaket.summary import plot_losses

    env = env or dist.DistEnv()
    rngs = dist.gather_states({"torch": torch.get_rng_state(), "sampler": trainer.generator.get_state()}, env)
    if env.is_main:
        def write(staging: Path) -> None:
            model.save(staging)
            memory.save(staging / "memory.safetensors")
            save_optimizer(optimizer, staging / "optimizer.safetensors")
            for rank, state in enumerate(rngs):
                save_file(state, str(staging / _rng_name(rank)))
            write_json(staging / "trainer_state.json", {"step": step, "memory": memory.state(),
                                                         "world_size": env.world_size})

        commit(out, write)
        try:
            plot_losses(out)
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a checkpoint
            click.echo(f"loss.png not written: {exc}", err=True)
    dist.barrier(env)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop logged rows past the checkpoint (logged after the last save, before an interruption)."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:        # a row torn by a kill mid-write
            continue
        if row["step"] <= step:
            rows.append(line)
    path.write_text("".join(r + "\n" for r in rows))


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).replace(" ", "").split(",") if x]


@click.command(cls=_KeepArgs, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--kg", "kg", type=click.Path(exists=True, dir_okay=False), default=None,
              help="KG store (DuckDB); on --resume defaults to the run's store.")
@click.option("--lm", default="default", help="Encoder name or path (BERT/RoBERTa family); "
              "'default' = the packaged all-MiniLM-L6-v2.")
@click.option("--steps", type=int, default=300, help="Total training steps (the LR schedule's horizon).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), default=None,
              help="Continue the run in this directory (same curve: optimizer, schedule, memory, RNG).")
@click.option("--lm1-layers", type=int, default=None, help="k = layers in LM1 (default: half).")
@click.option("--km-layers", type=int, default=2, help="L = relational GAT layers.")
@click.option("--km-heads", type=int, default=4, help="K = attention heads per GAT layer.")
@click.option("--fanouts", default="4,2", help="Neighbours sampled per hop (comma list; 1,1,1 = random walks).")
@click.option("--text-batch", type=int, default=8, help="Text sequences per step.")
@click.option("--kg-batch", type=int, default=16, help="Random root entities per step (plus mentioned ones).")
@click.option("--rel-batch", type=int, default=32, help="Held-out triples per step for relation prediction.")
@click.option("--negatives", type=int, default=32, help="Random candidate entities per dropped mention (L_e).")
@click.option("--neighbor-candidates", type=int, default=8, help="Graph-neighbour candidates per dropped mention.")
@click.option("--max-seq-len", type=int, default=64, help="Tokens per text sequence.")
@click.option("--desc-max-len", type=int, default=32, help="Tokens per entity description.")
@click.option("--lr", type=float, default=5e-5, help="Learning rate of the pretrained encoder.")
@click.option("--km-lr", type=float, default=1e-3, help="Learning rate of the KM, heads and merge norm.")
@click.option("--weight-decay", type=float, default=0.01)
@click.option("--warmup", type=float, default=0.06, help="Warmup steps (fraction of --steps when < 1).")
@click.option("--decay", type=click.Choice(["linear", "cosine", "constant"]), default="linear")
@click.option("--w-category", type=float, default=1.0, help="Weight of L_c.")
@click.option("--w-relation", type=float, default=1.0, help="Weight of L_r.")
@click.option("--w-token", type=float, default=1.0, help="Weight of L_t.")
@click.option("--w-entity", type=float, default=1.0, help="Weight of L_e.")
@click.option("--refresh-init", type=int, default=10, help="I_init of the memory refresh schedule.")
@click.option("--refresh-growth", type=float, default=2.0, help="a of the refresh schedule.")
@click.option("--refresh-every", type=int, default=3, help="r of the refresh schedule.")
@click.option("--refresh-max", type=int, default=500, help="I_max of the refresh schedule.")
@click.option("--momentum", type=float, default=0.8, help="m of the memory momentum update.")
@click.option("--desc-grad", type=click.Choice(["refresh", "never"]), default="refresh",
              help="Gradient into LM1 through the sampled entities' descriptions at refresh steps.")
@click.option("--e0", "e0_mode", type=click.Choice(["memory", "onthefly"]), default="memory",
              help="E^(0) from the context memory, or recomputed by LM1 every step (slow, no memory).")
@click.option("--seed", type=int, default=0)
@click.option("--log-every", type=int, default=1)
@click.option("--save-every", type=int, default=100)
@click.option("--device", default="cpu", help="torch device, e.g. cpu, cuda.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              help="bf16 = autocast of the forward (GPUs with bf16; weights, optimizer and memory stay fp32).")
@click.option("--time-limit", type=float, default=None,
              help="Stop and save after this many minutes of training (resume continues the schedule).")
@click.option("--threads", default="auto", help="torch CPU threads: a number, or auto (the cores not busy with "
              "other jobs, from the load average).")
@click.option("--nproc", type=int, default=1, help="Processes (DDP ranks) on this machine: re-launches through "
              "torch.distributed.run (torchrun --standalone). Multi-node: call torchrun yourself (README).")
@click.option("--stop-after", type=int, default=None, hidden=True, help="Stop (and save) after this step.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.pass_context
def main(ctx: click.Context, kg: str | None, lm: str, steps: int, out: str | None, resume: str | None,
         lm1_layers: int | None, km_layers: int, km_heads: int, fanouts: str, text_batch: int, kg_batch: int,
         rel_batch: int, negatives: int, neighbor_candidates: int, max_seq_len: int, desc_max_len: int,
         lr: float, km_lr: float, weight_decay: float, warmup: float, decay: str, w_category: float,
         w_relation: float, w_token: float, w_entity: float, refresh_init: int, refresh_growth: float,
         refresh_every: int, refresh_max: int, momentum: float, desc_grad: str, e0_mode: str, seed: int,
         log_every: int, save_every: int, device: str, precision: str, time_limit: float | None, threads: str,
         nproc: int, stop_after: int | None, no_progress: bool) -> None:
    """Pretrain JAKET on a KG store (LM1 -> relational GAT -> LM2, context memory, four losses)."""
    from kg_store.store import StoreError

    env = dist.env_from_vars()
    if nproc > 1 and not env.distributed:
        sys.exit(dist.relaunch(nproc, _without_nproc(ctx.meta["argv"])))
    torch.set_num_threads(pick_threads(threads, env.local_world_size))
    if not no_progress and env.is_main:
        click.echo(f"torch threads: {torch.get_num_threads()}" + (f" per rank x {env.world_size} ranks"
                                                                 if env.distributed else ""), err=True)
    try:
        if resume:
            run = Path(resume)
            if out and Path(out).resolve() != run.resolve():
                raise click.UsageError("--out must be the --resume directory (or left out)")
            saved = json.loads((run / "config.json").read_text())
            kg = kg or saved["kg"]
            given = {"steps": steps, "device": device, "precision": precision}
            overrides = {k: v for k, v in given.items()
                         if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
            train(kg, run, resume=True, stop_after=stop_after, progress=not no_progress,
                  time_limit=time_limit * 60 if time_limit else None, overrides=overrides)
            return
        if not kg or not out:
            raise click.UsageError("--kg and --out are required (or --resume RUN_DIR)")
        tcfg = TrainConfig(
            steps=steps, text_batch=text_batch, kg_batch=kg_batch, fanouts=_ints(fanouts), rel_batch=rel_batch,
            neighbor_candidates=neighbor_candidates, negatives=negatives, lr=lr, km_lr=km_lr,
            weight_decay=weight_decay, warmup=warmup, decay=decay, seed=seed,
            weights=LossWeights(w_category, w_relation, w_token, w_entity),
            refresh=RefreshSchedule(refresh_init, refresh_growth, refresh_every, refresh_max, momentum),
            desc_grad=desc_grad, e0_mode=e0_mode, log_every=log_every, save_every=save_every, device=device,
            precision=precision)
        mcfg = JAKETConfig(lm=lm, lm1_layers=lm1_layers, km_layers=km_layers, km_heads=km_heads,
                           max_seq_len=max_seq_len, desc_max_len=desc_max_len)
        run = train(kg, out, tcfg, mcfg, stop_after=stop_after, progress=not no_progress,
                    time_limit=time_limit * 60 if time_limit else None)
        if env.is_main:
            click.echo(f"run written to {run} (losses: {', '.join(LOSS_NAMES)}; see {run / 'loss.png'})")
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        dist.teardown()


if __name__ == "__main__":
    main()
