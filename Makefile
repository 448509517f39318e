# The two commands of the README: `make demo` and `make test`. Both create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= INFO
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

DEMO_KG := kg_store/wiki.duckdb
DEMO_RUN := runs/demo
DEMO_STEPS ?= 150
# the paper's refresh schedule starts at I_init=10; a full refresh of the 20k demo descriptions takes ~1-2 min on
# 2 cores, so the demo starts at 75 (2 refreshes in 150 steps). --refresh-init 10 gives the paper's schedule.
DEMO_REFRESH ?= 75
EVAL_DATA ?= ../shared/data

.PHONY: install test test-slow demo bench lint clean browser corpus-kg pretrain-corpus eval

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: takes the CPU wheel; anything unpinned would pull a CUDA build
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

# headless Chromium for the report's browser test (Debian package); the test skips loudly where it cannot be had
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
		echo "WARNING: chromium could not be installed: the report's browser test will be skipped"

test: install lint browser
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/jaket-build-kg --wikidata data/sample/mini-wikidata-all.json.bz2 \
		--wikipedia data/sample/mini-enwiki-pages-articles.xml.bz2 --out $(DEMO_KG)
	$(BIN)/jaket kg stats --kg $(DEMO_KG)
	$(BIN)/jaket kg sql --kg $(DEMO_KG) "SELECT head_label, relation_label, tail_label FROM sampled_triples LIMIT 8"
	$(BIN)/jaket-train --kg $(DEMO_KG) --steps $(DEMO_STEPS) --refresh-init $(DEMO_REFRESH) --out $(DEMO_RUN)
	$(BIN)/python -m jaket.summary $(DEMO_RUN)
	@if [ -d "$(EVAL_DATA)/eval/codex" ]; then \
		$(BIN)/jaket-eval --task entity-cls --checkpoint $(DEMO_RUN) --data $(EVAL_DATA) \
			--out $(DEMO_RUN)/eval-entity-cls.json && \
		$(BIN)/jaket-eval report $(DEMO_RUN)/eval-entity-cls.json --png $(DEMO_RUN)/eval.png; \
	else echo "evaluation skipped: the evaluation sets ($(EVAL_DATA)/eval) are not on this machine"; fi
	$(BIN)/jaket kg report --kg $(DEMO_KG) --out $(DEMO_RUN)/kg-report

# ---- issue 4: the pretraining run worth evaluating, and the systems x tasks table (needs ../shared/data) ----
CORPUS_KG := kg_store/corpus.duckdb
CORPUS_RUN ?= runs/corpus
PRETRAIN_MINUTES ?= 90
EVAL_RUN ?= $(CORPUS_RUN)
EVAL_OUT ?= benchmarks/results/eval

$(CORPUS_KG): | install
	$(BIN)/jaket kg build-corpus-kg --data $(EVAL_DATA) --out $(CORPUS_KG)

corpus-kg: $(CORPUS_KG)

# CPU pretraining for PRETRAIN_MINUTES; a rerun resumes the same run (schedule, optimizer, memory, RNG). A full
# refresh of the 54,781 descriptions takes ~2-3 min on 2 cores, so refreshes start at 100 steps (paper: 10)
pretrain-corpus: $(CORPUS_KG)
	@if [ -f $(CORPUS_RUN)/trainer_state.json ]; then \
		$(BIN)/jaket-train --resume $(CORPUS_RUN) --time-limit $(PRETRAIN_MINUTES); \
	else $(BIN)/jaket-train --kg $(CORPUS_KG) --out $(CORPUS_RUN) --steps 3000 --text-batch 16 --kg-batch 32 \
		--max-seq-len 96 --refresh-init 100 --save-every 200 --time-limit $(PRETRAIN_MINUTES); fi

# all four systems on all three tasks; EVAL_RUN = the jaket-train run dir to evaluate as `jaket`
eval: install
	@test -d $(EVAL_DATA)/eval || { echo "make eval needs the evaluation sets in $(EVAL_DATA)/eval"; exit 2; }
	@test -f $(EVAL_RUN)/model.safetensors || { echo "no run in $(EVAL_RUN): make pretrain-corpus, or EVAL_RUN=DIR"; exit 2; }
	@mkdir -p $(EVAL_OUT)
	@for task in entity-cls fewrel metaqa; do for sys in lm lm+gnn lm+gnn+m jaket; do \
		ck=none; [ $$sys = jaket ] && ck=$(EVAL_RUN); \
		$(BIN)/jaket-eval --task $$task --system $$sys --checkpoint $$ck --data $(EVAL_DATA) \
			--out $(EVAL_OUT)/$$task-$${sys//+/_}.json || exit 1; done; done
	$(BIN)/jaket-eval report $(EVAL_OUT)/*.json --png $(EVAL_OUT)/eval.png | tee $(EVAL_OUT)/table.md

bench: install
	$(BIN)/python benchmarks/bench_ingest.py
	@for b in benchmarks/bench_*.py; do [ "$$b" = benchmarks/bench_ingest.py ] || $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .prefect .pytest_cache .ruff_cache runs kg_store/*.duckdb*
