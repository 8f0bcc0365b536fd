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

.PHONY: setup demo test lint bench bench-gpu gpu-wheels clean

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

# One formatter: ruff format (pinned in the dev extra) lays out every file; check and format together.
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# One intra-op thread per process here too: the DDP and torchrun tests start several processes at once.
# The tests run side by side, one pytest-xdist worker per core (TEST_JOBS): a file's tests stay in one worker unless
# tests/conftest.py lists it in SPLIT, and the longest files start first (HEAVY_FIRST). TEST_JOBS=0: one process.
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
test: $(BIN)/.installed lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

# builds its own photos and shards in a temp dir; figures in benchmarks/out/results.json. The start-up row uses the
# demo world (built if missing); `make bench BENCH_ARGS="--make-times demo test"` also times those two targets.
bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

# The prepared GPU run, one call under 8 minutes on one GPU (H100/H200, 16 cores): bf16 samples/s + MFU of base and
# large ± torch.compile, a 2-process DDP step on the one GPU, loader scaling 1/2/4/8 workers; one JSON,
# benchmarks/out/gpu_run.json. For the lent GPU machine, which has no network: `make gpu-wheels` here first (the
# wheels its python3 3.12 lacks, benchmarks/gpu_wheels.txt, into the git-ignored .whl/, ~26 MiB), then on the machine
# (carry .whl) `make bench-gpu` or `bash benchmarks/gpu_offline.sh`: installs only the missing ones (--no-index,
# never torch), checks every import, runs the plan with the machine's own python3 and torch. No venv is made.
# Without a GPU: `make bench-gpu GPU_PY=.venv/bin/python BENCH_GPU_ARGS=--dry-run` (the same plan, tiny, on CPU).
WHEELS ?= .whl
GPU_PY ?= python3
gpu-wheels:
	$(PY) -m benchmarks.offline download --dest $(WHEELS)

bench-gpu:
	GPU_PY=$(GPU_PY) WHEELS=$(WHEELS) bash benchmarks/gpu_offline.sh $(BENCH_GPU_ARGS)

clean:
	rm -rf runs $(DEMO)
