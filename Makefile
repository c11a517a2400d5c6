# Two commands matter: `make study` (the whole matched-pair study) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study study-full-smoke test lint bench bench-study speedrun ioi-demo clean chromium release release-verify

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

study: $(STAMP)
	$(BIN)/interpgpt study

# Every stage at the seed cards' full shapes on a small budget (configs/full-smoke.toml).
study-full-smoke: $(STAMP)
	$(BIN)/interpgpt study --preset full --config configs/full-smoke.toml --out runs/study-full-smoke

# Style, architecture (import contracts), declared dependencies and types.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports
	$(BIN)/deptry src
	$(BIN)/mypy

# The report test opens report.html in headless Chromium (Debian's chromium package).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Two workers, one test file to each at a time (the tests are single-threaded).
test: lint chromium release-verify
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# The release (release/, docs/release.md): the four models and the study's SAEs, trained
# through the study's own stages in runs/release-build. Long on a CPU; a killed build
# resumes from its checkpoints.
release: $(STAMP)
	$(BIN)/interpgpt release build --out release

# Every release file's sha256, each model through transformers, TransformerLens and the raw
# state dict, each SAE through SAELens, and the behaviour check; skipped before a release.
release-verify: $(STAMP)
	@if [ -f release/MANIFEST.json ]; then $(BIN)/interpgpt release verify release; \
	else echo "release-verify: skipped (no release/MANIFEST.json yet; make release builds it)"; fi

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Each study stage's seconds and peak RSS on one fixed pair (bench/bench_study.py): the
# release's, else one trained once in runs/bench-study. Start it on an idle machine.
bench-study: $(STAMP)
	$(BIN)/python bench/bench_study.py $(BENCH_STUDY_ARGS)

# Idle minutes to the behaviour targets (bench/speedrun.py): the recipe levers on the
# standard model at equal minutes, the throughput levers, then the adopted recipe's curve
# on both models and the old recipe's on the standard one. Long (hours): start it on an
# idle machine; an interrupted run resumes, and runs already recorded under
# SPEEDRUN_ROOT are kept, not trained again. A short check of the whole pipeline:
#   make speedrun SPEEDRUN_ROOT=runs/speedrun-check SPEEDRUN_LEVER_MINUTES=0.2 \
#     SPEEDRUN_CURVE_MINUTES=0.4 SPEEDRUN_CURVE_EVERY=0.2 SPEEDRUN_ARGS="--limit 8 --auroc-tasks 16"
SPEEDRUN_RECIPE ?= muon-cosine
SPEEDRUN_ROOT ?= runs/speedrun
SPEEDRUN_SEED ?= 0
SPEEDRUN_LEVER_MINUTES ?= 5
SPEEDRUN_CURVE_MINUTES ?= 30
SPEEDRUN_CURVE_EVERY ?= 5
SPEEDRUN_ARGS ?=
SPEEDRUN = $(BIN)/python bench/speedrun.py --root $(SPEEDRUN_ROOT) $(SPEEDRUN_ARGS)
SPEEDRUN_CURVE = curve --minutes $(SPEEDRUN_CURVE_MINUTES) --every $(SPEEDRUN_CURVE_EVERY) --seed $(SPEEDRUN_SEED)
speedrun: $(STAMP)
	$(SPEEDRUN) levers --minutes $(SPEEDRUN_LEVER_MINUTES) --seeds $(SPEEDRUN_SEED)
	$(SPEEDRUN) throughput --recipe $(SPEEDRUN_RECIPE)
	$(SPEEDRUN) $(SPEEDRUN_CURVE) --recipe $(SPEEDRUN_RECIPE) --variant standard
	$(SPEEDRUN) $(SPEEDRUN_CURVE) --recipe $(SPEEDRUN_RECIPE) --variant adhd
	$(SPEEDRUN) $(SPEEDRUN_CURVE) --recipe adamw-cosine --variant standard

ioi-demo: $(STAMP)
	$(BIN)/interpgpt ioi-demo --out runs/ioi-demo

clean:
	rm -rf runs .pytest_cache
