# Two entry points on a fresh machine (Python 3.11, nothing installed):
#   make run    -> set up .venv, run the default case (cases/default.yaml)
#   make test   -> set up .venv, run the test suite (what .ci/run runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sciml-installed
OUT    ?= runs/default
PYTEST_ARGS ?=

.PHONY: setup run test bench clean

setup: $(STAMP)

# torch is installed first and pinned; TORCH_INDEX picks its index (e.g. the CPU build's,
# https://download.pytorch.org/whl/cpu; default: pip's own configuration). torch-harmonics
# 0.8.0 is the release that imports with torch 2.13 (its 0.9.x wheels need another torch).
TORCH_INDEX ?=
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install torch-harmonics==0.8.0
	$(BIN)/pip install -e '.[mpi,test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sciml run cases/default.yaml --out $(OUT)

test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/pip install torch-cfd pymor
	$(BIN)/python benchmarks/navier_stokes.py

clean:
	rm -rf $(VENV) runs
