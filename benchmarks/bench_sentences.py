"""Sentence splitting: the rule splitter vs spaCy blank English + sentencizer.

Texts: the miniwiki articles (data/sample, cleaned by pipelines.wikitext), the real enwiki excerpt and the
T-REx-shaped sample.jsonl abstracts (../shared/data, skipped when absent). Both splitters get the same
paragraphs. Reports sentences/s, chars/s and agreement: boundary precision/recall/F1 of the rule splitter
against spaCy, and the share of paragraphs split identically.

    .venv/bin/python benchmarks/bench_sentences.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson

from pipelines.dump_io import READ_BUFFER, open_recovering
from pipelines.sentences import paragraphs, spacy_sentences, split_sentences
from pipelines.wikitext import clean_wikitext

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _xml_articles(path: Path) -> list[str]:
    reader = io.BufferedReader(open_recovering(path), READ_BUFFER)
    texts = []
    with reader:
        for _, elem in ET.iterparse(reader):
            if elem.tag.rsplit("}", 1)[-1] == "page":
                redirect = [c for c in elem if c.tag.rsplit("}", 1)[-1] == "redirect"]
                text = next((t.text for t in elem.iter() if t.tag.rsplit("}", 1)[-1] == "text"), None)
                if not redirect and text:
                    texts.append(clean_wikitext(text).text)
                elem.clear()
    return texts


def corpora() -> dict[str, list[str]]:
    out = {"miniwiki": _xml_articles(REPO / "data" / "sample" / "mini-enwiki-pages-articles.xml.bz2")}
    enwiki = SHARED / "wikipedia" / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    if enwiki.is_file():
        out["enwiki excerpt"] = _xml_articles(enwiki)
    trex = SHARED / "corpus" / "sample.jsonl"
    if trex.is_file():
        out["sample.jsonl"] = [orjson.loads(line)["text"] for line in trex.open("rb")]
    return out


def run(splitter, paras: list[tuple[str, int, int]], repeat: int) -> tuple[float, list[list[tuple[int, int]]]]:
    best = float("inf")
    result: list = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = [splitter(text, lo, hi) for text, lo, hi in paras]
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spacy_sentences("Warm up. The model.")
    print("| corpus | paragraphs | chars | rule sent/s | spaCy sent/s | rule chars/s | spaCy chars/s | "
          "rule sents | spaCy sents | boundary P / R / F1 (rule vs spaCy) | identical paragraphs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, texts in corpora().items():
        paras = [(t, lo, hi) for t in texts for lo, hi in paragraphs(t)]
        chars = sum(hi - lo for _, lo, hi in paras)
        t_rule, rule = run(split_sentences, paras, args.repeat)
        t_spacy, spc = run(spacy_sentences, paras, args.repeat)
        n_rule, n_spacy = sum(map(len, rule)), sum(map(len, spc))
        tp = fp = fn = same = 0
        for r, s in zip(rule, spc, strict=True):
            rb, sb = {e for _, e in r[:-1]}, {e for _, e in s[:-1]}
            tp, fp, fn = tp + len(rb & sb), fp + len(rb - sb), fn + len(sb - rb)
            same += r == s
        p, rc = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        f1 = 2 * p * rc / max(p + rc, 1e-9)
        print(f"| {name} | {len(paras):,} | {chars:,} | {n_rule / t_rule:,.0f} | {n_spacy / t_spacy:,.0f} | "
              f"{chars / t_rule / 1e6:.2f} M | {chars / t_spacy / 1e6:.2f} M | {n_rule:,} | {n_spacy:,} | "
              f"{p:.3f} / {rc:.3f} / {f1:.3f} | {same / len(paras):.1%} |")


if __name__ == "__main__":
    main()
