# The commands people type. Every target sets up .venv first if needed (CPU-only torch).
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
UI_PORT ?= 5000
UI_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
SERVER_HOST ?= 127.0.0.1
SERVER_ARTIFACTS ?= $(CURDIR)/mlruns-server/artifacts

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,server]'
	touch $@

.PHONY: help install train test test-all lint format ui server sweep search report evaluate trained bench bench-quick profile constraints clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the project with pinned dependencies

train: $(STAMP) ## train one agent on the defaults (overrides: make train ARGS="lr=1e-3 seed=1")
	$(BIN)/python -m dqn.train $(ARGS)

test: $(STAMP) ## the newcomer's tests: units and the quick end-to-end checks (a few minutes on 2 cores)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-all: $(STAMP) ## every test, the slow end-to-end ones too (SLURM and PostgreSQL skip unless running: see .ci/run)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP) ## ruff fix and format
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

sweep: $(STAMP) ## run the local_optimum sweep (45 jobs) on all local cores, then report it (ARGS= to shorten)
	$(BIN)/python -m dqn.train sweep=local_optimum hydra/launcher=joblib $(ARGS)

search: $(STAMP) ## run the local_optimum Optuna search (8 trials x 3 seeds, pruned) on all local cores (ARGS= to shorten)
	$(BIN)/python -m dqn.train search=local_optimum hydra/launcher=joblib $(ARGS)

report: $(STAMP) ## print the report of the most recent sweep (python -m dqn.cli.compare)
	$(BIN)/python -m dqn.cli.compare $(ARGS)

evaluate: $(STAMP) ## evaluate the shipped lander, trained/lunar-dqn.pth, over 100 greedy episodes (ARGS="video=true")
	$(BIN)/python -m dqn.cli.evaluate weights=trained/lunar-dqn.pth $(ARGS)

trained: $(STAMP) ## retrain the shipped lander from conf/experiment/trained_lander.yaml; ship it if it scores >= 250
	$(BIN)/python -m dqn.train experiment=trained_lander hydra.run.dir=runs/trained $(ARGS)
	$(BIN)/python -m dqn.cli.evaluate weights=runs/trained/lunar-dqn.pth episodes=100 min_return_mean=250 \
		> runs/trained/evaluation.txt || { cat runs/trained/evaluation.txt; exit 1; }
	cat runs/trained/evaluation.txt
	mkdir -p trained
	cp runs/trained/lunar-dqn.pth runs/trained/config.yaml runs/trained/evaluation.txt trained/

bench: $(STAMP) ## benchmark the default config against Stable-Baselines3 (long: see benchmarks/bench.py)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench.py $(ARGS)

bench-quick: ## the benchmark's smoke mode, a few minutes
	$(MAKE) bench ARGS="--quick $(ARGS)"

profile: $(STAMP) ## where the time of one env step goes (default, previous default, the exercise's layout)
	$(BIN)/python benchmarks/profile_step.py $(ARGS)

ui: $(STAMP) ## the MLflow UI on the default store at 127.0.0.1:5000, printing our runs' address (UI_HOST=, UI_PORT=)
	$(BIN)/python -m dqn.cli.ui --host $(UI_HOST) --port $(UI_PORT) $(ARGS)

server: $(STAMP) ## MLflow tracking server on a local PostgreSQL (scripts/postgres-local.sh) at SERVER_HOST:SERVER_PORT
	mkdir -p $(SERVER_ARTIFACTS)
	@# The URI goes in through the environment: it holds the database password, kept out of `ps`.
	@# MLflow's GenAI job runners (7 processes, ~240 MB each) are not needed for training runs.
	uri=$$(scripts/postgres-local.sh start) && MLFLOW_BACKEND_STORE_URI=$$uri MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
		exec $(BIN)/mlflow server \
		--serve-artifacts --artifacts-destination $(SERVER_ARTIFACTS) --host $(SERVER_HOST) --port $(SERVER_PORT)

constraints: $(STAMP) ## re-pin constraints.txt from what .venv has
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -viE '^(dqn|-e)' | sed 's/+cpu$$//'; } > constraints.new
	mv constraints.new constraints.txt

clean: ## remove .venv and caches (keeps runs/ and mlruns/)
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
