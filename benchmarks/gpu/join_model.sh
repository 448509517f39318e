#!/usr/bin/env bash
# Join the encoder halves carried by two device calls (benchmarks/gpu/prepare.sh) and check the checksum.
set -euo pipefail
PARTS=$1; MODEL=$2
mkdir -p "$MODEL"
cat "$PARTS/model.part0" "$PARTS/model.part1" > "$MODEL/model.safetensors"
[ "$(sha256sum "$MODEL/model.safetensors" | cut -d' ' -f1)" = "$(cat "$PARTS/model.sha256")" ] || {
  echo "model checksum mismatch"; exit 1; }
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
  cp "$PARTS/$f" "$MODEL/"; done
echo "model joined: $(du -sh "$MODEL" | cut -f1)"
