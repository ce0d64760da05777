# The first two commands of the README. Both create the environment from the lock file first.
SHELL := /bin/bash
PYTHON ?= python3.11
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test unit bench bento clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv==0.13.9

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	touch $@

demo: .venv/.synced  ## the main job on the embedded defaults (Ctrl-C stops it)
	.venv/bin/vigil demo

test: .venv/.synced  ## the whole test suite
	.venv/bin/python -m pytest -q

unit: .venv/.synced
	.venv/bin/python -m pytest -q tests/unit

bench: .venv/.synced
	.venv/bin/python benchmarks/serving.py
	.venv/bin/python benchmarks/pipeline.py
	.venv/bin/python benchmarks/validation.py
	.venv/bin/python benchmarks/backfill.py
	.venv/bin/python benchmarks/features.py
	.venv/bin/python benchmarks/model_quality.py --home .vigil-bench/quality
	.venv/bin/python benchmarks/batch_scoring.py --home .vigil-bench/quality

# The endpoint's Bento, offline: requirements pinned from uv.lock, no lock step. bentoml build calls
# uv even then (and pip-installs it when uv is not on PATH), hence .tools/bin on PATH.
BENTOML_HOME ?= $(HOME)/bentoml
bento: .venv/.synced  ## build the endpoint's Bento into $BENTOML_HOME (serve: bentoml serve vigil_fraud:latest)
	$(UV) export --frozen --no-hashes --no-annotate --no-dev --extra production --extra batch --no-emit-project --quiet -o serving/requirements.txt
	PATH="$(abspath $(TOOLS))/bin:$$PATH" BENTOML_HOME="$(BENTOML_HOME)" BENTOML_DO_NOT_TRACK=True UV_OFFLINE=1 \
		.venv/bin/python -m bentoml build .

clean:
	rm -rf .venv $(TOOLS) .vigil .vigil-bench
