"""Move a `jaket-train` run off a machine whose transfers are size-capped (the lent GPU returns at most 8 files,
16 MiB each, 64 MiB in all; the run's fp32 model alone is ~92 MB).

pack:   the encoder's pretrained tensors travel as bf16 *deltas* from the base checkpoint (trained - base):
        the rounding error is 2^-9 of the update, not of the weight, so fine-tuning updates survive (a bf16
        copy of the weights would erase most of them); every other tensor (KM, heads, merge norm, a fresh
        MLM head) travels in fp32. Deltas are split into files under --max-mb. The JSON/PNG/log files and
        lm/ go into one meta.tar.gz. The context memory does not travel (55k x 384 floats).
unpack: base checkpoint + deltas -> model.safetensors; config.json's kg and lm point to this machine; the
        memory is recomputed from the trained LM1 over the store (stated in the run's config extra).

    python benchmarks/gpu/transport.py pack RUN_DIR OUT_DIR [--max-mb 15]
    python benchmarks/gpu/transport.py unpack PACKED_DIR RUN_DIR --kg STORE [--lm default]
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

META_FILES = ("config.json", "trainer_state.json", "metrics.jsonl", "loss.png", "train.log")


def base_tensors(lm: str, lm1_layers: int) -> dict[str, torch.Tensor]:
    """'lm.'-prefixed tensors of the base encoder that come from its checkpoint (equal under two seeds)."""
    from jaket.lm import LanguageModule, quiet_transformers

    with quiet_transformers():
        torch.manual_seed(1)
        a = LanguageModule.from_pretrained(lm, lm1_layers).state_dict()
        torch.manual_seed(2)
        b = LanguageModule.from_pretrained(lm, lm1_layers).state_dict()
    return {f"lm.{k}": v for k, v in a.items() if torch.equal(v, b[k])}


def pack(run_dir: Path, out_dir: Path, max_mb: float = 15.0) -> dict:
    from safetensors.torch import load_file, save_file

    cfg = json.loads((run_dir / "config.json").read_text())["model"]
    base = base_tensors(cfg["lm"], cfg["lm1_layers"])
    trained = load_file(str(run_dir / "model.safetensors"))
    out_dir.mkdir(parents=True, exist_ok=True)
    full = {k: v.float().contiguous() for k, v in trained.items() if k not in base or base[k].shape != v.shape}
    save_file(full, str(out_dir / "full.safetensors"))
    chunks: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    limit = max_mb * 2**20
    for k in sorted(set(trained) - set(full)):
        delta = (trained[k].float() - base[k].float()).to(torch.bfloat16)
        if delta.dim() == 0:
            delta = delta.reshape(1)        # (restored to its shape on unpack by the base tensor's shape)
        rows = max(1, int(limit // (delta[0].numel() * 2)))
        for start in range(0, len(delta), rows):        # a tensor over the limit is cut by rows: "name@row"
            piece = delta[start:start + rows].contiguous()
            if size and size + piece.numel() * 2 > limit:
                chunks.append({})
                size = 0
            chunks[-1][f"{k}@{start}" if piece.size(0) < len(delta) else k] = piece
            size += piece.numel() * 2
    for i, chunk in enumerate(chunks):
        save_file(chunk, str(out_dir / f"delta-{i}.safetensors"))
    with tarfile.open(out_dir / "meta.tar.gz", "w:gz") as tar:
        for name in META_FILES:
            if (run_dir / name).exists():
                tar.add(run_dir / name, arcname=name)
        tar.add(run_dir / "lm", arcname="lm")
    return {"full_tensors": len(full), "delta_tensors": len(trained) - len(full), "delta_files": len(chunks)}


def unpack(packed: Path, run_dir: Path, kg: str, lm: str = "default") -> dict:
    from safetensors.torch import load_file, save_file

    from jaket.encode import JAKETEncoder
    from jaket.lm import load_tokenizer, resolve_lm
    from jaket.model import JAKETModel
    from kg_store.store import KGStore

    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(packed / "meta.tar.gz") as tar:
        tar.extractall(run_dir, filter="data")
    cfg = json.loads((run_dir / "config.json").read_text())
    base = base_tensors(resolve_lm(lm), cfg["model"]["lm1_layers"])
    tensors = load_file(str(packed / "full.safetensors"))
    worst = 0.0
    pieces: dict[str, dict[int, torch.Tensor]] = {}
    for path in sorted(packed.glob("delta-*.safetensors")):
        for name, delta in load_file(str(path)).items():
            k, _, start = name.partition("@")
            pieces.setdefault(k, {})[int(start or 0)] = delta
    for k, parts in pieces.items():
        delta = torch.cat([parts[i] for i in sorted(parts)]).float().reshape(base[k].shape)
        tensors[k] = (base[k].float() + delta).contiguous()
        worst = max(worst, float(delta.abs().max()))
    save_file(tensors, str(run_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg["kg"] = str(Path(kg).resolve())
    cfg["model"]["lm"] = lm
    cfg["model"].setdefault("extra", {})["lm_path"] = resolve_lm(lm)
    cfg["model"]["extra"]["transport"] = ("bf16 deltas from the base encoder; memory recomputed from the "
                                          "trained LM1 after the transfer")
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    encoder = JAKETEncoder(JAKETModel.load(run_dir), load_tokenizer(run_dir / "lm"), None, cfg["kg"])
    with KGStore(kg) as store:
        encoder.recompute_memory(store, progress=True).save(run_dir / "memory.safetensors")
    return {"tensors": len(tensors), "largest_delta": worst}


@click.group()
def main() -> None:
    """Pack / unpack a run for a size-capped transfer."""


@main.command(name="pack")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-mb", type=float, default=15.0)
def pack_command(run_dir: Path, out_dir: Path, max_mb: float) -> None:
    click.echo(json.dumps(pack(run_dir, out_dir, max_mb)))


@main.command(name="unpack")
@click.argument("packed", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--kg", required=True)
@click.option("--lm", default="default")
def unpack_command(packed: Path, run_dir: Path, kg: str, lm: str) -> None:
    click.echo(json.dumps(unpack(packed, run_dir, kg, lm)))


if __name__ == "__main__":
    main()
