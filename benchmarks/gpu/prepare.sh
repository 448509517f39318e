#!/usr/bin/env bash
# Prepare the three carries for the lent GPU (each device call takes at most 64 MiB of working tree + carry;
# the base encoder alone is 91 MB, so it travels in two halves into /root/jk on the warm machine):
#   .dev/p1  first half of the encoder's model.safetensors
#   .dev/p2  second half + its config/tokenizer files
#   .dev/p3  src/ (git archive of HEAD: helpers' uncommitted edits never travel), the duckdb wheel, the store
# Device calls, back to back (the machine stays warm 30 s between calls):
#   1. carry .dev/p1: mkdir -p /root/jk/parts && cp .dev/p1/* /root/jk/parts/
#   2. carry .dev/p2: cp .dev/p2/* /root/jk/parts/ && benchmarks/gpu/join_model.sh /root/jk/parts /root/jk/model
#   3. carry .dev/p3: benchmarks/gpu/pretrain_on_gpu.sh .dev/p3 /root/jk/model $OUT 7
# A machine left idle for more than 30 s goes back and the next call gets a bare one (/root/jk is gone): issue
# the three calls without pauses, and put everything that must happen on one machine into the third call.
# Session 2 spent 15 min of device time as follows: start + calls 1-3 ~5 min (the run stopped after 2 of its 6
# minutes: see the calibration note in pretrain_on_gpu.sh), an idle gap lost the machine, then calls 1-3 again
# with a fixed 3,000 steps.
set -euo pipefail
cd "$(dirname "$0")/../.."
STORE=${1:-kg_store/corpus.duckdb}
MODEL=$(.venv/bin/python -c "from jaket.lm import default_lm_path; print(default_lm_path())")
rm -rf .dev && mkdir -p .dev/p1 .dev/p2 .dev/p3/src
half=$(( $(stat -c %s "$MODEL/model.safetensors") / 2 ))
head -c "$half" "$MODEL/model.safetensors" > .dev/p1/model.part0
tail -c +"$((half + 1))" "$MODEL/model.safetensors" > .dev/p2/model.part1
sha256sum "$MODEL/model.safetensors" | cut -d' ' -f1 > .dev/p2/model.sha256
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do cp "$MODEL/$f" .dev/p2/; done
git archive HEAD | tar -x -C .dev/p3/src
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d .dev/p3 "duckdb==$(.venv/bin/python -c 'import duckdb; print(duckdb.__version__)')"
.venv/bin/python -c "import duckdb; duckdb.connect('$STORE', read_only=True).execute('CHECKPOINT')" 2>/dev/null || true
cp "$STORE" .dev/p3/corpus.duckdb
du -sh .dev/*
