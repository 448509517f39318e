"""Checkpoint I/O with safetensors + JSON only (never pickle).

- optimizer: every tensor of `optimizer.state_dict()["state"]` flattened to "state.<param index>.<key>" in a
  safetensors file; the scalars and the param groups go to JSON beside it;
- RNG states (torch's global generator and the sampler's generator) as uint8 tensors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def save_optimizer(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    save_file(tensors, str(path), metadata={
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
    })


def load_optimizer(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata() or {}
        state: dict[int, dict] = {}
        for name in handle.keys():  # noqa: SIM118
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = handle.get_tensor(name)
    for idx, entry in json.loads(meta.get("scalars", "{}")).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = json.loads(meta["param_groups"])
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_rng(path: str | os.PathLike, generators: dict[str, torch.Generator]) -> None:
    from safetensors.torch import save_file

    tensors = {"torch": torch.get_rng_state()}
    tensors.update({name: g.get_state() for name, g in generators.items()})
    save_file(tensors, str(path))


def load_rng(path: str | os.PathLike, generators: dict[str, torch.Generator]) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch"])
    for name, g in generators.items():
        g.set_state(tensors[name])


def write_json(path: str | os.PathLike, obj: object) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
