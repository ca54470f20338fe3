# paddle-gradcam-parity: build, test and parity targets (GNU make).
#
#   make install       venv in $(VENV) from requirements.lock, then requirements-nodeps.lock with --no-deps
#   make fixtures      fixtures/both.png (shared copy or pinned download, sha256-checked)
#   make weights       seeded ResNet50 weights and their Paddle conversion under fixtures/weights/
#   make test          the fast tier of the test suite (pytest-xdist, $(JOBS) workers): what .ci/run runs
#   make test-all      the fast and the slow (opt-in) tier: what the GitHub workflow runs
#   make parity        full float32 parity matrix -> reports/         (DEVICE=cpu|gpu, JOBS=N)
#   make parity-f64    full float64 parity matrix -> reports/f64/
#   make parity-quick  quick profile              -> reports/quick/
#   make bench         timing benchmark
#   make lint-workflows  actionlint on .github/workflows/*.yml
#   make clean / distclean

PY ?= python3
VENV ?= .venv
DEVICE ?= cpu
JOBS ?= 2

PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Every python invocation runs from the repo root and imports paddle_impl, parity, tools from it.
export PYTHONPATH := $(CURDIR)

.DEFAULT_GOAL := test
.PHONY: install fixtures weights test test-all parity parity-f64 parity-quick bench lint-workflows clean distclean

install: $(STAMP)

# PaddleClas goes in without its dependencies (their pins clash with the lock's): requirements-nodeps.lock.
$(STAMP): requirements.lock requirements-nodeps.lock
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -r requirements.lock
	$(PYTHON) -m pip install --no-deps -r requirements-nodeps.lock
	touch $@

fixtures: install
	$(PYTHON) -m tools.fixtures

weights: install
	$(PYTHON) -c "from parity.weights import ensure_default_weights, ensure_paddle_weights; ensure_paddle_weights(ensure_default_weights())"

# --dist loadgroup: the tests that read one shared parity run stay on one xdist worker.
test: fixtures weights
	$(PYTHON) -m pytest -q -n $(JOBS) --dist loadgroup --timeout=1800

test-all: fixtures weights
	$(PYTHON) -m pytest -q -n $(JOBS) --dist loadgroup --timeout=3600 -m "not full"

parity: fixtures weights
	$(PYTHON) -m parity --profile full --dtype float32 --device $(DEVICE) --jobs $(JOBS) --out reports

parity-f64: fixtures weights
	$(PYTHON) -m parity --profile full --dtype float64 --device $(DEVICE) --jobs $(JOBS) --out reports/f64

parity-quick: fixtures weights
	$(PYTHON) -m parity --profile quick --dtype float32 --device $(DEVICE) --jobs $(JOBS) --out reports/quick

bench: fixtures weights
	$(PYTHON) -m parity.bench

lint-workflows: install
	$(VENV)/bin/actionlint .github/workflows/*.yml

clean:
	rm -rf reports/output_* reports/f64/output_* reports/quick/output_* reports/stages .pytest_cache

distclean: clean
	rm -rf $(VENV) fixtures/weights
