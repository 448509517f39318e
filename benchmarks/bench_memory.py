"""JAKET training-core benchmarks (run by `make bench`; numbers go to benchmarks/README.md):

1. memory speed-up: training steps/s with the entity context memory against the same step computing E^(0)
   on the fly with LM1 from the descriptions of every sampled entity (same batches and neighbourhoods: same
   seed), at two neighbourhood sizes; plus the refresh cost amortised over T(i) steps;
2. memory refresh: descriptions/s of the memory build (cached tokens, length-bucketed batches,
   inference mode) against a plain padded-batch forward of the same texts (tokenize each batch, id order,
   pad to the batch's longest, no_grad).

Uses kg_store/wiki.duckdb when it exists, else a synthetic store shaped like it (20k entities).
    .venv/bin/python benchmarks/bench_memory.py [--kg STORE] [--steps 3] [--refresh-sample 4000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SYL = ["ka", "lo", "mi", "ren", "to", "va", "sen", "dor", "bel", "ith", "an", "mor", "quel", "zu", "ria", "nov"]
NOUNS = ["painter", "city", "river", "company", "album", "film", "village", "mountain", "politician", "novel",
         "species", "university", "footballer", "church", "island", "language", "band", "ship", "school", "song"]
ADJS = ["American", "French", "German", "Italian", "Japanese", "small", "large", "former", "ancient", "modern"]


def _name(rng: random.Random) -> str:
    return " ".join("".join(rng.choice(SYL) for _ in range(rng.randint(2, 3))).capitalize()
                    for _ in range(rng.randint(1, 2)))


def synthetic_store(path: str | Path, entities: int = 20_000, triples: int = 110_000, relations: int = 170,
                    categories: int = 50, passages: int = 1_000, seed: int = 0) -> Path:
    import polars as pl

    from kg_store.store import create, write_tables

    path = Path(path)
    if path.exists():
        return path
    rng = random.Random(seed)
    ents = []
    for i in range(entities):
        label = _name(rng)
        noun = rng.choice(NOUNS)
        if rng.random() < 0.05:      # a few long Wikipedia-style first sentences
            desc = f"{label} is a {rng.choice(ADJS)} {noun} " + " ".join(
                f"{rng.choice(ADJS).lower()} {rng.choice(NOUNS)} of {_name(rng)}" for _ in range(12)) + "."
            start = 0
        else:                        # Wikidata-style: no mention of the entity
            desc = f"{rng.choice(ADJS)} {noun} in {_name(rng)}"
            start = None
        ents.append({"entity_id": i, "qid": f"Q{i + 1}", "label": label, "description": desc,
                     "desc_source": "wikidata", "desc_mention_start": start,
                     "desc_mention_end": None if start is None else len(label),
                     "category_id": NOUNS.index(noun) % categories})
    hub = [int(rng.paretovariate(1.2)) % entities for _ in range(triples)]
    trip = {(rng.randrange(entities), rng.randrange(relations), hub[k]) for k in range(triples)}
    pas, men = [], []
    for p in range(passages):
        text, ms = "", []
        for _ in range(rng.randint(1, 4)):
            e = rng.randrange(entities)
            text += "In that year "
            ms.append({"passage_id": p, "entity_id": e, "char_start": len(text),
                       "char_end": len(text) + len(ents[e]["label"]), "source": "anchor"})
            text += ents[e]["label"] + f" was a {rng.choice(NOUNS)} near {_name(rng)}. "
        pas.append({"passage_id": p, "doc_id": p // 10, "idx": p % 10, "text": text.strip()})
        men.extend(ms)
    con = create(path)
    write_tables(con, {
        "entities": pl.DataFrame(ents),
        "relations": pl.DataFrame([{"relation_id": r, "pid": f"P{r + 1}", "label": f"relation {_name(rng)}",
                                    "description": f"a {rng.choice(NOUNS)} related property"}
                                   for r in range(relations)]),
        "categories": pl.DataFrame([{"category_id": c, "qid": f"Q{900000 + c}", "label": f"class {c}"}
                                    for c in range(categories)]),
        "triples": pl.DataFrame([{"head_id": h, "relation_id": r, "tail_id": t} for h, r, t in sorted(trip)]),
        "documents": pl.DataFrame([{"doc_id": d, "title": f"doc {d}"} for d in range(passages // 10 + 1)]),
        "passages": pl.DataFrame(pas),
        "mentions": pl.DataFrame(men),
    })
    con.close()
    return path


def default_store() -> Path:
    wiki = REPO / "kg_store" / "wiki.duckdb"
    if wiki.exists():
        return wiki
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "jaket-bench" / "synthetic-20k.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return synthetic_store(path)


def bench_speedup(store_path: Path, lm: str, sizes: list[tuple[int, list[int]]], steps: int, text_batch: int,
                  refresh_rate: float | None) -> list[dict]:
    import torch

    from jaket.lm import load_tokenizer
    from jaket.memory import EntityMemory
    from jaket.model import JAKETConfig, JAKETModel
    from jaket.pretrain import Pretrainer, TrainConfig
    from jaket.tokens import cached_tokenize
    from jaket.train import make_optimizer
    from kg_store.store import KGStore

    store = KGStore(store_path)
    c = store.counts()
    tok = load_tokenizer(lm)
    torch.manual_seed(0)
    model = JAKETModel.from_lm(JAKETConfig(lm=lm, num_entities=c["entities"], num_relations=c["relations"],
                                           num_categories=c["categories"])).train()
    ent = cached_tokenize(store.path, "entity", tok, store.entity_descriptions(), model.config.desc_max_len)
    # the memory's values do not change the cost of a step: a random memory avoids a full build here
    memory = EntityMemory(torch.randn(c["entities"], model.hidden_size), torch.randn(c["relations"],
                                                                                     model.hidden_size))
    memory.last_refresh = 10 ** 9                      # no refresh inside the timed steps
    rows = []
    for kg_batch, fanouts in sizes:
        res = {"fanouts": fanouts, "kg_batch": kg_batch}
        for mode in ("memory", "onthefly"):
            cfg = TrainConfig(fanouts=fanouts, e0_mode=mode, text_batch=text_batch, kg_batch=kg_batch, seed=0)
            tr = Pretrainer(model, tok, store, memory, ent, cfg)
            opt = make_optimizer(model, cfg)
            times, nodes = [], []
            for i in range(steps + 1):
                t = time.perf_counter()
                total, _, info = tr.losses(1)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                if i:                                   # the first step warms up
                    times.append(time.perf_counter() - t)
                    nodes.append(info["nodes"])
            res[mode] = sum(times) / len(times)
            res["nodes"] = sum(nodes) / len(nodes)
            print(f"  kg batch {kg_batch} fanouts {fanouts} {mode:8s}: {res[mode]:.2f} s/step ({res['nodes']:.0f} entities/step)",
                  flush=True)
        res["speedup"] = res["onthefly"] / res["memory"]
        if refresh_rate:
            refresh_s = c["entities"] / refresh_rate
            for period in (10, 500):
                res[f"speedup_T{period}"] = res["onthefly"] / (res["memory"] + refresh_s / period)
        rows.append(res)
    store.close()
    return rows


def bench_refresh(store_path: Path, lm: str, sample: int, batch: int = 64) -> dict:
    import numpy as np
    import torch

    from jaket.lm import LanguageModule, load_tokenizer
    from jaket.memory import encode_descriptions, pool_mentions
    from jaket.tokens import cached_tokenize, encode_with_spans
    from kg_store.store import KGStore

    with KGStore(store_path) as store:
        rows = store.entity_descriptions()
    rng = random.Random(0)
    rows = sorted(rng.sample(rows, min(sample, len(rows))))
    tok = load_tokenizer(lm)
    lm_mod = LanguageModule.from_pretrained(lm).eval()
    max_len = 32
    # ours: token cache (built once per store+tokenizer; a warm cache is the steady state) + length buckets
    tokens = cached_tokenize(Path(f"/tmp/jaket-bench-sample-{len(rows)}.duckdb"), "entity", tok, rows, max_len)
    t = time.perf_counter()
    ours = encode_descriptions(lm_mod, tokens, pad_id=tok.pad_token_id)
    t_ours = time.perf_counter() - t
    # plain: tokenize each batch, id order, pad to the batch's longest, no_grad
    t = time.perf_counter()
    plain, padded = [], 0
    with torch.no_grad():
        for lo in range(0, len(rows), batch):
            part = rows[lo:lo + batch]
            cs = [np.array([[r[2], r[3]]] if r[2] is not None else np.zeros((0, 2)), dtype=np.int64) for r in part]
            ids, spans = encode_with_spans(tok, [r[1] for r in part], cs, max_len)
            enc = tok.pad({"input_ids": ids}, return_tensors="pt")
            padded += enc["input_ids"].numel()
            z = lm_mod.run_lm1(enc["input_ids"], enc["attention_mask"])
            sp = torch.tensor([s[0].tolist() if len(s) and s[0, 0] >= 0 else [0, 0] for s in spans])
            plain.append(pool_mentions(z, sp))
    t_plain = time.perf_counter() - t
    plain_t = torch.cat(plain)
    real = int(tokens.lengths().sum())
    return {"n": len(rows), "ours_s": t_ours, "plain_s": t_plain, "ours_rate": len(rows) / t_ours,
            "plain_rate": len(rows) / t_plain, "ratio": t_plain / t_ours, "real_tokens": real,
            "plain_padded_tokens": padded, "max_abs_diff": float((plain_t - ours).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kg", type=Path, default=None)
    ap.add_argument("--lm", default="default")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode and size (after 1 warm-up)")
    ap.add_argument("--text-batch", type=int, default=8)
    ap.add_argument("--threads", default="auto", help="torch threads (auto: cores not busy, see jaket.train)")
    ap.add_argument("--refresh-sample", type=int, default=4000, help="descriptions in the refresh benchmark")
    args = ap.parse_args()
    import torch

    from jaket.lm import resolve_lm
    from jaket.train import pick_threads

    torch.set_num_threads(pick_threads(args.threads))

    store = args.kg or default_store()
    lm = resolve_lm(args.lm)
    print(f"# bench_memory: store {store}, encoder {lm}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print("## memory refresh", flush=True)
    r = bench_refresh(store, lm, args.refresh_sample)
    print(f"  {r['n']} descriptions: memory build {r['ours_rate']:.0f} desc/s ({r['real_tokens']} tokens), "
          f"plain padded batches {r['plain_rate']:.0f} desc/s ({r['plain_padded_tokens']} padded tokens): "
          f"ratio {r['ratio']:.2f}x (max |diff| {r['max_abs_diff']:.1e})", flush=True)
    print("## memory speed-up (training step)", flush=True)
    rows = bench_speedup(store, lm, [(16, [4, 2]), (64, [10, 5])], args.steps, args.text_batch, r["ours_rate"])
    print("\n| kg batch, fanouts | entities/step | s/step with memory | s/step on the fly | speed-up | with refresh T=10 | "
          "with refresh T=500 |\n|---|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['kg_batch']}, {','.join(map(str, x['fanouts']))} | {x['nodes']:.0f} | {x['memory']:.2f} | {x['onthefly']:.2f} | "
              f"{x['speedup']:.2f}x | {x.get('speedup_T10', float('nan')):.2f}x | "
              f"{x.get('speedup_T500', float('nan')):.2f}x |")


if __name__ == "__main__":
    main()
