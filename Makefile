# fkd: `make help` lists the targets. Variables: DATA=DIR (competition folder), PRESET=quick|default|best,
# OFFLINE=1 (local server instead of kaggle.com), CONFIG=FILE (e.g. tuning/best.yaml), SET="lr=1e-3 epochs=5",
# BUDGET=MIN (train as many epochs as fit MIN minutes on the machine that trains, timed once when the run begins),
# REMOTE=kaggle (train in a Kaggle kernel on its GPUs; ACCELERATOR=NvidiaTeslaT4 by default).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fkd-installed
FKD := $(BIN)/fkd
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1

DATA ?=
PRESET ?=
OFFLINE ?=
CONFIG ?=
SET ?=
RUN ?= $(shell ls -td runs/*/ 2>/dev/null | head -1)
REMOTE_ARGS = $(if $(REMOTE),--remote $(REMOTE)) $(if $(ACCELERATOR),--accelerator $(ACCELERATOR))
CFG_ARGS = $(if $(DATA),--data-dir $(DATA)) $(if $(PRESET),--preset $(PRESET)) $(if $(CONFIG),--config $(CONFIG)) $(foreach s,$(SET),--set $(s)) $(if $(BUDGET),--set budget_min=$(BUDGET))

.DEFAULT_GOAL := help
.PHONY: help install lock lint test test-fast board report runs submit data practice train predict serve tune dashboard scores leaderboard bench reliability gpu-check blend clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with everything pinned in constraints.txt (idempotent)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	touch $@

lock: ## re-pin constraints.txt from the current .venv
	{ echo "# What the tests ran with (make install / .ci/run install with -c constraints.txt). Regenerate: make lock"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^fkd'; } > constraints.txt

lint: install ## ruff over the package, tests and benchmarks (rules in pyproject.toml)
	$(BIN)/ruff check fkd tests benchmarks

test: lint ## lint, then the whole test suite, slow tests included (what CI runs)
	$(BIN)/python -m pytest tests

test-fast: lint ## lint, then the tests that train nothing beyond a few steps (-m "not slow"): for every edit
	$(BIN)/python -m pytest tests -m "not slow"

submit: install ## the main job: data -> train -> predict (TTA) -> upload -> score (OFFLINE=1: local server)
	$(FKD) submit $(CFG_ARGS) $(REMOTE_ARGS) $(if $(OFFLINE),--offline)

data: install ## load, validate and summarise the competition data (DATA=DIR)
	$(FKD) data --data-dir $(or $(DATA),competition/data)

practice: install ## write the practice competition into competition/data/practice
	$(FKD) practice --out competition/data/practice

train: install ## K-fold training (DATA=DIR PRESET=... SET="k=v ...")
	$(FKD) train $(CFG_ARGS) $(REMOTE_ARGS)

predict: install ## submission from the newest run (RUN=runs/NAME)
	$(FKD) predict $(RUN)

serve: install ## local Kaggle-compatible server on DATA (default: the practice competition)
	$(FKD) serve $(or $(DATA),competition/data/practice)

tune: install ## Optuna study (DATA=DIR, TRIALS=N, WORKERS=N)
	$(FKD) tune $(CFG_ARGS) $(if $(TRIALS),--trials $(TRIALS)) $(if $(WORKERS),--workers $(WORKERS))

dashboard: install ## optuna-dashboard on the tuning study (PORT=8080)
	$(FKD) dashboard $(if $(PORT),--port $(PORT))

board: install ## TensorBoard on runs/: every run's and fold's curves, live (PORT=6006)
	$(BIN)/tensorboard --logdir runs --host 127.0.0.1 --port $(or $(PORT),6006)

report: install ## one self-contained HTML page for a run (RUN=runs/NAME, default the newest)
	$(FKD) report $(RUN)

runs: install ## every training run in runs/: model, epochs, minutes, CV without/with TTA, submitted; best first
	$(FKD) runs

scores: install ## the submissions ledger: CV vs public vs private, best first
	$(FKD) scores

leaderboard: install ## the competition's top and where our best would rank
	$(FKD) leaderboard

bench: install ## benchmarks: parse speed, training throughput, where an epoch's time goes, near-duplicate grouping (DATA=DIR; default ytf15, else practice)
	$(BIN)/python benchmarks/parse.py $(if $(DATA),--data-dir $(DATA))
	$(BIN)/python benchmarks/throughput.py $(if $(DATA),--data-dir $(DATA))
	$(BIN)/python benchmarks/epoch_profile.py $(if $(DATA),--data-dir $(DATA))
	$(BIN)/python benchmarks/near_duplicates.py $(if $(DATA),--data-dir $(DATA))

gpu-check: install ## one fold on CUDA with bf16: throughput and time estimate (exits 1 without a GPU)
	$(BIN)/python benchmarks/gpu_check.py $(if $(DATA),--data-dir $(DATA)) $(if $(PRESET),--preset $(PRESET))

blend: install ## blend finished runs with out-of-fold NNLS weights (RUNS="runs/a runs/b")
	$(FKD) blend $(RUNS)

reliability: install ## kill-anywhere, malformed-input corpus, server abuse: the report table (KILLS=4)
	$(BIN)/python tests/reliability.py --kills $(or $(KILLS),4) --out reliability.json

clean: ## remove runs, caches and the venv (keeps submissions/)
	rm -rf runs competition/data/.cache $(VENV)
