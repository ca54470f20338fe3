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
#   make bench         quick timing benchmark (< 10 min on 2 cores) -> reports/bench.md
#   make bench-all     the whole timing grid -> reports/bench_all.md, bench_zoo.md, bench_smooth.md, bench_hubs.md
#                      (BENCH_SHARD=K/N runs one shard of it into build/bench/; make bench-merge joins them)
#   make bench-rerun   measure the committed bench reports again at this commit, part by part (RERUN=files;
#                      PARTS=3,5 with one file: only those parts, the others keep their cells and commits)
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
.PHONY: install fixtures weights test test-all parity parity-f64 parity-quick bench bench-all bench-parts bench-merge bench-rerun lint-workflows clean distclean

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

# -- timing (parity.bench) ----------------------------------------------------------------
BENCH := $(PYTHON) -m parity.bench
BENCH_WORK ?= build/bench
BENCH_REPORTS ?= reports
NPROC := $(shell nproc 2>/dev/null || echo 1)
BENCH_QUICK_THREADS ?= 2
BENCH_THREADS ?= $(if $(filter 1,$(NPROC)),1,1,$(NPROC))
BENCH_SHARD ?=
SEED_LIGHT := gradcam,gradcam++,xgradcam,eigencam,eigengradcam,layercam
ALL_LIGHT := gradcam,gradcam++,xgradcam,eigencam,eigengradcam,layercam,hirescam,gradcamelementwise,fullgrad,shapleycam,fem,kpca_cam,randomcam,finercam,segeigencam,refinecam,sess,dff
HEAVY := ablationcam,scorecam
# squeezenet1_1 is left out: its paddle.vision twin is another network (the bench refuses it, as it refuses a hub pair
# whose architectures differ).
ZOO := resnet18,resnet34,resnet101,resnext50_32x4d,wide_resnet50_2,vgg11,vgg16,mobilenet_v2,mobilenet_v3_large,densenet121,shufflenet_v2_x1_0
SMALL_ZOO := resnet18,mobilenet_v2,mobilenet_v3_large,shufflenet_v2_x1_0
HUB_BENCH := resnet50d,deit_tiny_patch16_224
# a part's file: NAME, or NAME.K-of-N for a shard
part = $(BENCH_WORK)/$(1)$(if $(BENCH_SHARD),.$(subst /,-of-,$(BENCH_SHARD)))
BENCH_GRID = $(BENCH) --size 224 --threads $(BENCH_THREADS) --out $(BENCH_WORK) $(if $(BENCH_SHARD),--shard $(BENCH_SHARD))

# The quick form: ResNet50 at 224x224, batch 1, the seed's light six (one process of 3 timed calls per framework,
# alternating), and one call of ScoreCAM on ResNet18 with its throughput line.
bench: fixtures weights
	$(BENCH) --methods $(SEED_LIGHT) --threads $(BENCH_QUICK_THREADS) --repeat 1 --calls 3 --remeasure 2 --out $(BENCH_WORK) --name quick-light
	$(BENCH) --model resnet18 --methods scorecam --size 224 --threads $(BENCH_QUICK_THREADS) --heavy-calls 0 --throughput-batches 1,16 --out $(BENCH_WORK) --name quick-scorecam
	$(BENCH) merge $(BENCH_WORK)/quick-light.json $(BENCH_WORK)/quick-scorecam.json --out $(BENCH_REPORTS) --name bench

# The whole grid of issue 22, at 1 thread and every core; the light methods 2 processes x 2 calls per framework.
# ScoreCAM and AblationCAM make one call per process (--heavy-calls 0: set-up included, a second call would cost hours)
# except on ResNet50 at batch 1, where the set-up is measured apart.
bench-parts: fixtures weights
	$(BENCH_GRID) --methods $(ALL_LIGHT) --batch 1,8 --repeat 2 --calls 2 --name $(notdir $(call part,all-light))
	$(BENCH_GRID) --methods $(HEAVY) --batch 1 --name $(notdir $(call part,all-heavy-b1))
	$(BENCH_GRID) --methods $(HEAVY) --batch 8 --heavy-calls 0 --name $(notdir $(call part,all-heavy-b8))
	$(BENCH_GRID) --methods seed --smooth aug,eigen --repeat 2 --calls 2 --heavy-calls 0 --name $(notdir $(call part,smooth))
	$(BENCH_GRID) --model $(ZOO) --methods $(SEED_LIGHT) --batch 1,8 --repeat 2 --calls 2 --name $(notdir $(call part,zoo-light))
	$(BENCH_GRID) --model $(ZOO) --methods $(HEAVY) --batch 1 --heavy-calls 0 --name $(notdir $(call part,zoo-heavy-b1))
	$(BENCH_GRID) --model $(SMALL_ZOO) --methods $(HEAVY) --batch 8 --heavy-calls 0 --name $(notdir $(call part,zoo-heavy-b8))
	$(BENCH_GRID) --model $(HUB_BENCH) --methods seed --repeat 2 --calls 2 --name $(notdir $(call part,hubs))

bench-merge:
	$(BENCH) merge $(wildcard $(BENCH_WORK)/all-*.json) --out $(BENCH_REPORTS) --name bench_all
	$(BENCH) merge $(wildcard $(BENCH_WORK)/smooth*.json) --out $(BENCH_REPORTS) --name bench_smooth
	$(BENCH) merge $(wildcard $(BENCH_WORK)/zoo-*.json) --out $(BENCH_REPORTS) --name bench_zoo
	$(BENCH) merge $(wildcard $(BENCH_WORK)/hubs*.json) --out $(BENCH_REPORTS) --name bench_hubs

bench-all: bench-parts
	$(MAKE) bench-merge

# After a port change: every part of the committed reports (the commands in their headers) once more, then their
# merge in place of each report; `$(BENCH) rerun --dry-run FILES` lists the parts and what they took last time.
RERUN ?= $(wildcard $(BENCH_REPORTS)/bench*.json)
bench-rerun: fixtures weights
	$(BENCH) rerun $(RERUN) $(if $(PARTS),--parts $(PARTS))

lint-workflows: install
	$(VENV)/bin/actionlint .github/workflows/*.yml

clean:
	rm -rf reports/output_* reports/f64/output_* reports/quick/output_* reports/stages .pytest_cache

distclean: clean
	rm -rf $(VENV) fixtures/weights
