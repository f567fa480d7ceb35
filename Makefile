# fairseq_npu: `make demo` fine-tunes a small RoBERTa on an embedded synthetic GLUE task; `make test` runs the suite.
# Both create the virtual environment first. Override the pins for your machine, e.g.
#   make install TORCH_SPEC="torch==2.5.1"      (the torch your torch_npu / CUDA stack needs)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
FAIRSEQ_SPEC ?= ve-fairseq==0.12.3
PIP_FLAGS ?= --quiet --disable-pip-version-check
BIN := $(VENV)/bin
PYTEST_FLAGS ?= -q
# the tests run single-threaded (OMP_NUM_THREADS=1), two at a time: 318 s instead of 459-612 s on 2 cores
TEST_WORKERS ?= 2

.PHONY: install demo test conformance bench clean

install: $(VENV)/.installed

# fairseq goes in with --no-deps: every fairseq distribution requires torchaudio, which would pull a second,
# multi-GB torch build. setup.py lists fairseq's other requirements itself.
$(VENV)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[test]"
	$(BIN)/python -m pip install $(PIP_FLAGS) --no-deps "$(FAIRSEQ_SPEC)"
	touch $@

demo: install
	$(BIN)/python -m fairseq_npu.demo --workdir demo_output

test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_FLAGS) tests

# fairseq's own tests with the plugin imported; fails unless every failure is one docs/hooks.md lists (3+ min, --fast)
FAIRSEQ_TESTS ?= ../shared/fairseq_tests
CONFORMANCE_FLAGS ?= --fast
CONFORMANCE_OUT ?= conformance_output
conformance: install
	rm -rf $(CONFORMANCE_OUT)
	-bash $(FAIRSEQ_TESTS)/run.sh --with-plugin $(CONFORMANCE_FLAGS) $(abspath $(CONFORMANCE_OUT))
	$(BIN)/python tests/conformance_check.py $(CONFORMANCE_OUT)/fairseq_tests.xml

clean:
	rm -rf demo_output conformance_output .pytest_cache
