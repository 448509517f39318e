"""Tokenization with offset mappings: character spans from the store become token spans.

Token spans are 0-based and inclusive, (s, o) = first and last token that overlaps the character span.
The description cache keeps every entity's (and relation's) token ids + mention token span per tokenizer,
beside the store in STORE.duckdb.tokcache/, so a memory build does not re-tokenize every run.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CLS_SPAN = (0, 0)   # DESIGN.md position-1 rule: no mention in the description -> the [CLS] token (index 0)


@dataclass
class TokenizedTexts:
    """Ragged token ids (concatenated) with one mention token span per text."""

    ids: torch.Tensor      # int32 [total tokens]
    offsets: torch.Tensor  # int64 [n + 1]; text i is ids[offsets[i]:offsets[i+1]]
    spans: torch.Tensor    # int64 [n, 2]; (s, o) inclusive, (0, 0) when the mention is missing

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def batch(self, index: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids [B, Lmax], attention_mask [B, Lmax], spans [B, 2]) for texts `index`, right-padded."""
        index = torch.as_tensor(index, dtype=torch.long)
        start = self.offsets[index]
        length = self.offsets[index + 1] - start
        width = int(length.max()) if len(index) else 0
        pos = torch.arange(width)
        mask = pos[None, :] < length[:, None]
        flat = (start[:, None] + pos[None, :]).clamp(max=max(len(self.ids) - 1, 0))
        ids = torch.where(mask, self.ids[flat].long(), torch.full_like(flat, pad_id))
        return ids, mask.long(), self.spans[index]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"ids": self.ids, "offsets": self.offsets, "spans": self.spans}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TokenizedTexts:
        return cls(ids=tensors["ids"], offsets=tensors["offsets"], spans=tensors["spans"])


def char_to_token_spans(offset_mapping: np.ndarray, char_spans: np.ndarray) -> np.ndarray:
    """Token span (s, o) of each char span [start, end) given a text's offset mapping [T, 2]; -1 where the span
    covers no (kept) token. Special tokens have empty offsets and never match."""
    offset_mapping = np.asarray(offset_mapping, dtype=np.int64).reshape(-1, 2)
    char_spans = np.asarray(char_spans, dtype=np.int64).reshape(-1, 2)
    out = np.full((len(char_spans), 2), -1, dtype=np.int64)
    if len(char_spans) == 0 or len(offset_mapping) == 0:
        return out
    tok_start, tok_end = offset_mapping[:, 0], offset_mapping[:, 1]
    real = tok_end > tok_start
    hit = real[None, :] & (tok_end[None, :] > char_spans[:, :1]) & (tok_start[None, :] < char_spans[:, 1:])
    found = hit.any(axis=1)
    first = hit.argmax(axis=1)
    last = hit.shape[1] - 1 - hit[:, ::-1].argmax(axis=1)
    out[found, 0] = first[found]
    out[found, 1] = last[found]
    return out


def encode_with_spans(tokenizer: object, texts: Sequence[str], char_spans: Sequence[np.ndarray],
                      max_len: int) -> tuple[list[list[int]], list[np.ndarray]]:
    """Tokenize `texts` (truncated to max_len, special tokens added) and map each text's char spans
    ([k, 2] arrays) to token spans ([k, 2], -1 rows for spans cut off by truncation)."""
    if not texts:
        return [], []
    enc = tokenizer(list(texts), truncation=True, max_length=max_len, return_offsets_mapping=True,
                    add_special_tokens=True)
    spans = [char_to_token_spans(off, cs) for off, cs in zip(enc["offset_mapping"], char_spans, strict=True)]
    return enc["input_ids"], spans


def tokenize_descriptions(tokenizer: object, rows: Sequence[tuple], max_len: int,
                          chunk: int = 4096) -> TokenizedTexts:
    """rows = (id, text, char_start | None, char_end | None) in id order -> TokenizedTexts with the mention's
    token span, or (0, 0) (the [CLS] token) when the mention is missing or truncated away."""
    all_ids: list[list[int]] = []
    spans = np.zeros((len(rows), 2), dtype=np.int64)
    for lo in range(0, len(rows), chunk):
        part = rows[lo:lo + chunk]
        texts = [r[1] or "" for r in part]
        cs = [np.array([[r[2], r[3]]] if r[2] is not None and r[3] is not None and r[3] > r[2]
                       else np.zeros((0, 2)), dtype=np.int64) for r in part]
        ids, tok_spans = encode_with_spans(tokenizer, texts, cs, max_len)
        all_ids.extend(ids)
        for j, ts in enumerate(tok_spans):
            if len(ts) and ts[0, 0] >= 0:
                spans[lo + j] = ts[0]
    lengths = torch.tensor([len(x) for x in all_ids], dtype=torch.long)
    offsets = torch.zeros(len(all_ids) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=offsets[1:])
    flat = torch.tensor([t for x in all_ids for t in x], dtype=torch.int32)
    return TokenizedTexts(ids=flat, offsets=offsets, spans=torch.from_numpy(spans))


def tokenizer_fingerprint(tokenizer: object) -> str:
    """A short hash of the tokenizer's full definition (vocab, normalizer, pre-tokenizer, post-processor)."""
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:   # truncation / padding are call-time state, not part of the definition
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        blob = json.dumps(spec, sort_keys=True)
    else:
        blob = repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(f"{type(tokenizer).__name__}\n{blob}".encode()).hexdigest()[:16]


def rows_digest(rows: Sequence[tuple]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for row in rows:
        h.update(repr(row).encode())
        h.update(b"\x00")
    return h.hexdigest()


def cache_dir(store_path: str | os.PathLike) -> Path:
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".tokcache")


def cached_tokenize(store_path: str | os.PathLike | None, kind: str, tokenizer: object, rows: Sequence[tuple],
                    max_len: int) -> TokenizedTexts:
    """tokenize_descriptions through the cache STORE.tokcache/<kind>-<tokenizer hash>-<max_len>.safetensors.

    The cache holds a digest of the rows: a rebuilt store with changed descriptions is re-tokenized."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if store_path is None:
        return tokenize_descriptions(tokenizer, rows, max_len)
    digest = rows_digest(rows)
    path = cache_dir(store_path) / f"{kind}-{tokenizer_fingerprint(tokenizer)}-{max_len}.safetensors"
    if path.exists():
        try:
            with safe_open(str(path), "pt") as handle:
                if (handle.metadata() or {}).get("digest") == digest:
                    return TokenizedTexts.from_tensors({k: handle.get_tensor(k) for k in handle.keys()})  # noqa: SIM118
        except Exception:  # noqa: BLE001 - a broken cache file is rebuilt
            pass
    tokens = tokenize_descriptions(tokenizer, rows, max_len)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tokens.to_tensors().items()}, str(tmp),
                  metadata={"digest": digest, "max_len": str(max_len)})
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"token cache not written ({exc}); descriptions will be re-tokenized next run",
                      stacklevel=2)
    return tokens


def relation_rows(store: object) -> list[tuple[int, str, int | None, int | None]]:
    """(relation_id, 'label, description', 0, len(label)) per relation: the relation's 'mention' in its
    description is its label at the start; text falls back to the pid (then the [CLS] rule applies)."""
    rows = []
    for rid, pid, label, desc in store.query(
            "SELECT relation_id, pid, label, description FROM relations ORDER BY relation_id"):
        text = ", ".join(x for x in (label, desc) if x) or pid
        rows.append((rid, text, 0 if label else None, len(label) if label else None))
    return rows
