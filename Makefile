PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run patterns test lint bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/dagrun run pipelines/etl.toml
	@echo "report written to $$(ls -t pipelines/out/report-*.md | head -n 1)" \
	  "(published digests: pipelines/out/published.txt)"

# The alert's token is a secret param: a stand-in unless one is set.
patterns: $(STAMP)
	DAGRUN_PARAM_alert_token="$${DAGRUN_PARAM_alert_token:-example-token}" \
	  $(BIN)/dagrun run pipelines/patterns.toml
	@echo "outputs written to $$(ls -td pipelines/out/patterns/*/ | head -n 1)" \
	  "(ledger of every night: pipelines/out/patterns/ledger.jsonl)"

test: $(STAMP)
	$(BIN)/ruff check dagrun tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check dagrun tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick --runs 3

clean:
	rm -rf $(VENV) .dagrun build *.egg-info
