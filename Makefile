# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench bench-faiss lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tastemaker demo --db sqlite:///tastemaker-demo.db

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/import_movielens.py
	$(BIN)/python benchmarks/candidates.py
	$(BIN)/python benchmarks/ranking.py
	$(BIN)/python benchmarks/reranking.py
	$(BIN)/python benchmarks/serving.py  # ~10 min: trains on 1M interactions, then 60 s HTTP loads

bench-faiss: $(STAMP)  # builds 1M-vector indexes (IVF ~1 min, HNSW ~14 min): about 20 minutes on 2 cores
	$(BIN)/python benchmarks/faiss_retrieval.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) tastemaker-demo.db*
