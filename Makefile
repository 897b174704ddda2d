# make train: set up .venv and train the quickstart model; make test: the test suite (all of it,
# as CI runs it); make test-fast: the tests not marked slow, for the edit loop
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# the suite in two worker processes of one thread each (pytest-xdist; tests/conftest.py)
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile
# the newest run's last checkpoint, for `make sample`
CKPT ?= $(shell ls -t outputs/runs/*/checkpoints/last.ckpt 2>/dev/null | head -n 1)

.PHONY: setup train test test-fast sample evaluate demo bench lint docs fashion-mnist emoji clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python -m diffusion_lit.train experiment=quickstart $(ARGS)

test: $(STAMP)
	$(PYTEST) $(ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(ARGS)

# the pages of docs/ as a static site in site/ (offline); the pages read as they are on GitHub too
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

sample: $(STAMP)
	@test -n "$(CKPT)" || { echo "No checkpoint under outputs/runs/: run 'make train' first or pass CKPT=<path>"; exit 1; }
	$(BIN)/python -m diffusion_lit.sample ckpt_path=$(CKPT) $(ARGS)

evaluate: $(STAMP)
	@test -n "$(CKPT)" || { echo "No checkpoint under outputs/runs/: run 'make train' first or pass CKPT=<path>"; exit 1; }
	$(BIN)/python -m diffusion_lit.evaluate ckpt_path=$(CKPT) data=digits $(ARGS)

# the web page on http://127.0.0.1:7860/ (the newest run's last checkpoint unless CKPT=...)
demo: $(STAMP)
	$(BIN)/python -m diffusion_lit.demo $(if $(CKPT),ckpt_path=$(CKPT)) $(ARGS)

# the benchmarks; each appends its table to bench/RESULTS.md (sampling and unfamiliar need a quickstart run)
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/sampling.py $(CKPT)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/unfamiliar.py $(CKPT)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/phrasings.py $(CKPT) data=digits
	HF_HUB_OFFLINE=1 $(BIN)/python bench/retrieval.py --data digits
	HF_HUB_OFFLINE=1 $(BIN)/python bench/recipe.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/time_to_quality.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/captions.py --baseline

lint: $(STAMP)
	$(BIN)/ruff check diffusion_lit tests bench
	$(BIN)/ruff format --check diffusion_lit tests bench

# Debian's Fashion-MNIST idx files, unpacked where data=fashion_mnist reads them offline
fashion-mnist:
	test -d /usr/share/datasets/fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; }
	mkdir -p data/FashionMNIST/raw
	for f in /usr/share/datasets/fashion-mnist/*.gz; do gunzip -c $$f > data/FashionMNIST/raw/$$(basename $$f .gz); done

# the npm registry's emoji packages (Noto Emoji, Twemoji), where data=emoji reads them
emoji: $(STAMP)
	$(BIN)/python -m diffusion_lit.data.emoji data/emoji

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
