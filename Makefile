# Two commands on a fresh machine: `make run` (the quick reproduction) and `make test`.
# Each installs what it needs into .venv first: `run` the package and its extras,
# `test` also llama.cpp's server, which the runtime tests start (compiled once per machine).
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL := $(VENV)/.installed-local
DEMO  := runs/demo
QUICK := runs/quick
# llama.cpp's server, for the runtime tests and `endpoints up`: compiled once per machine
# (minutes), then reused from the wheel cache
WHEELS := $(HOME)/.cache/llmoffload/wheels
LLAMA  := llama-cpp-python[server]==0.3.36

.PHONY: install local run demo test bench results

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # the CPU wheel; an unpinned torch pulls CUDA
	$(BIN)/pip install --quiet -e '.[learn,dev,ray,runtime,study]'
	touch $(STAMP)

$(LOCAL): $(STAMP)
	ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
	  $(BIN)/pip wheel --quiet --no-deps -w $(WHEELS) '$(LLAMA)'
	$(BIN)/pip install --quiet --find-links $(WHEELS) '$(LLAMA)'
	touch $(LOCAL)

install: $(STAMP)

local: $(LOCAL)

run: $(STAMP)
	$(BIN)/llmoffload reproduce --quick --out $(QUICK)
	@echo "Figures 4-9 and REPORT.md: $(QUICK)/ (the full sweep: llmoffload reproduce)"

demo: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/llmoffload scenario show paper
	$(BIN)/llmoffload instance --scenario paper --seed 0 --out $(DEMO)/instance.json
	$(BIN)/llmoffload schedule $(DEMO)/instance.json --policy heft --gantt $(DEMO)/heft.png
	$(BIN)/llmoffload schedule $(DEMO)/instance.json --policy optimal --gantt $(DEMO)/optimal.png
	@echo "Gantt charts: $(DEMO)/heft.png $(DEMO)/optimal.png"

test: $(LOCAL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright
	$(BIN)/pytest -n 2 --dist loadgroup -m 'not alone'  # one set of llama servers: one worker
	$(BIN)/pytest -m alone  # timing tests measure the machine: nothing may run beside them

bench: $(LOCAL)
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_runtime.py

# docs/results.md and README's headline table, from the benchmarks run on this commit and
# the study in runs/beyond (run `llmoffload reproduce --study beyond` first: hours)
results: $(LOCAL)
	$(BIN)/python benchmarks/results.py --runtime --study-out runs/beyond
