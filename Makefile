# Two commands on a fresh machine: `make run` (the demo) and `make test`.
# Each installs what it needs into .venv first.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO  := runs/demo

.PHONY: install run test bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # the CPU wheel; an unpinned torch pulls CUDA
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/llmoffload scenario show paper
	$(BIN)/llmoffload instance --scenario paper --seed 0 --out $(DEMO)/instance.json
	$(BIN)/llmoffload schedule $(DEMO)/instance.json --policy heft --gantt $(DEMO)/heft.png
	$(BIN)/llmoffload schedule $(DEMO)/instance.json --policy optimal --gantt $(DEMO)/optimal.png
	@echo "Gantt charts: $(DEMO)/heft.png $(DEMO)/optimal.png"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py
