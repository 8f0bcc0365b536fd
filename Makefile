# Two commands: `make demo` and `make test`. Each creates .venv if missing and installs the project.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DEMO    ?= data/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint bench bench-gpu clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch and torchvision from one resolution (timm needs torchvision); never newer than 2.14.1
	$(BIN)/pip install -q "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

# rebuilt when the demo world's generator changes (make: same seed and size give the same shards)
$(DEMO)/manifest.json: $(BIN)/.installed $(wildcard shards/demo/*.py)
	$(BIN)/python -m shards build demo --out $(DEMO)

# One intra-op thread per run: the demo's tiny model gains nothing from more, and two threads on a busy
# 2-core machine spin against each other (measured: a start run 24 s with one thread, 198 s with two).
# Runs whose parents have finished go side by side, one per core (DEMO_JOBS), each with its one thread.
DEMO_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
demo: $(BIN)/.installed $(DEMO)/manifest.json
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python study.py --config configs/studies/demo.yaml --jobs $(DEMO_JOBS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# One intra-op thread per process here too: the DDP and torchrun tests start several processes at once.
# The tests run side by side, one pytest-xdist worker per core (TEST_JOBS): a file's tests stay in one worker unless
# tests/conftest.py lists it in SPLIT, and the longest files start first (HEAVY_FIRST). TEST_JOBS=0: one process.
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
test: $(BIN)/.installed lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

bench: $(BIN)/.installed  # builds its own photos and shards in a temp dir; figures in benchmarks/out/results.json
	$(BIN)/python -m benchmarks.run_all

# The prepared GPU run, one call under 8 minutes on one GPU (H200, 16 cores): bf16 samples/s + MFU of base and
# large ± torch.compile, a 2-process DDP step on the one GPU, loader scaling 1/2/4/8 workers; one JSON,
# benchmarks/out/gpu_run.json. Without a GPU: `make bench-gpu BENCH_GPU_ARGS=--dry-run` (the same plan, tiny, on CPU).
bench-gpu: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run_all --only gpu loader --gpu-run $(BENCH_GPU_ARGS)

clean:
	rm -rf runs $(DEMO)
