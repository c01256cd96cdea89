# One entry point for set-up, the demo, tests, benchmarks and results.
# VENV may point elsewhere (CI reuses one outside the clone); it is built from nothing when absent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.adamx-installed

.PHONY: venv demo test lint format bench tables figures repro check-data clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q "torch>=2.5" "torchvision>=0.20"
	$(PY) -m pip install -q -e ".[harness,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) run.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .

bench: $(STAMP)
	$(PY) scripts/bench_optim.py
	$(PY) scripts/bench_train.py

tables: $(STAMP)
	$(PY) scripts/make_tables.py

figures: $(STAMP)
	$(PY) scripts/make_figures.py

# Read every file of a data set before a sweep: make check-data DATASET=voc [ROOT=/data/voc]
DATASET ?= cifar100
ROOT ?=
check-data: $(STAMP)
	$(PY) scripts/check_data.py dataset=$(DATASET) $(if $(ROOT),dataset.root=$(ROOT))

# The measured small-scale reproduction of results/README.md (digits, 5 seeds, ~20 min on 2 cores).
repro: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) run.py -m experiment=repro_optimizers optimizer=adam,adax,adamx,sgd,radam,lion,sophiag seed=0,1,2,3,4 runs_root=runs/repro
	OMP_NUM_THREADS=1 $(PY) run.py -m experiment=repro_schedules optimizer=adam,adam_adafactor,adam_adax,adam_adamx seed=0,1,2,3,4 runs_root=runs/repro
	$(PY) scripts/make_tables.py --runs runs/repro
	$(PY) scripts/make_figures.py --runs runs/repro

clean-venv:
	rm -rf $(VENV)
