# One front door for installing, running and testing. Every target installs what it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Python 3.10 (TFX 1.16 supports 3.9/3.10); .python-version makes pyenv's shim resolve it.
PYTHON310 ?= $(shell command -v python3.10 2>/dev/null || ls /root/.pyenv/versions/3.10.*/bin/python3.10 2>/dev/null | tail -n 1)
INSTALLED := $(VENV)/.installed
# TFX 1.16, tf.Transform and TFMA need Keras 2 (tf_keras); TF 2.16 defaults to Keras 3.
export TF_USE_LEGACY_KERAS := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install run test test-fast test-containers image lint format sample export-fashion-mnist constraints clean compile serve bench

$(PY):
	@test -n "$(PYTHON310)" || { echo "error: Python 3.10 not found; install it (e.g. pyenv install 3.10) or set PYTHON310=/path/to/python3.10" >&2; exit 1; }
	$(PYTHON310) -m venv $(VENV)

# Re-installs only when the pins or the package metadata change: a second call takes seconds.
$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

## Runs the whole pipeline on the embedded sample (data/sample). Extra flags: make run ARGS="--epochs 3"
run: install
	$(PY) local_runner.py $(ARGS)

# A Docker engine for the container tests and the image: the one that answers, else Debian's,
# installed and started by the script with its own data root, and stopped at the end.
ENGINE := deploy/container_engine.sh
IMAGE ?= tfx-image-pipeline:local
# Under make, container tests fail instead of skipping where no engine can be had, so CI
# cannot skip them silently. `make test REQUIRE_CONTAINER_ENGINE=0` lets them skip.
REQUIRE_CONTAINER_ENGINE ?= 1

## Runs every test, the slow end-to-end ones and the container tests included.
test: install
	REQUIRE_CONTAINER_ENGINE=$(REQUIRE_CONTAINER_ENGINE) $(ENGINE) run -- $(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow and not containers" $(PYTEST_ARGS)

## Runs only the container tests (tests/containers/: the image, the TF Serving stand-in, Beam's PortableRunner).
test-containers: install
	REQUIRE_CONTAINER_ENGINE=$(REQUIRE_CONTAINER_ENGINE) $(ENGINE) run -- $(PY) -m pytest -m containers $(PYTEST_ARGS)

## Builds the pipeline image (deploy/Dockerfile) as $(IMAGE), offline; seconds when nothing changed.
image: install
	$(ENGINE) run -- env PYTHON=$(PY) IMAGE=$(IMAGE) deploy/build_image.sh

## Compiles for Kubeflow Pipelines / Vertex AI: make compile ARGS="--container-image IMAGE"
compile: install
	$(PY) -m pipeline compile $(ARGS)

## Serves the pushed model with the local TF Serving-compatible server (REST 8501, gRPC 8500).
MODEL_DIR ?= outputs/serving/image_classifier
serve: install
	$(PY) -m pipeline serve --model-base-path $(MODEL_DIR) $(ARGS)

## Runs the benchmarks that need no extra data; see BENCHMARKS.md for the others.
bench: install
	$(PY) -m bench.pipeline_run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Re-creates the embedded sample from Debian's dataset-fashion-mnist package.
sample: install
	rm -rf data/sample data/holdout
	$(PY) -m pipeline.data_export --out data/sample --split train --per-class 50
	$(PY) -m pipeline.data_export --out data/holdout --split test --per-class 10

## Exports all 70,000 Fashion-MNIST images (OUT/train, OUT/test) for benchmarks.
FASHION_MNIST_OUT ?= outputs/fashion_mnist
export-fashion-mnist: install
	@test -d /usr/share/datasets/fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }
	$(PY) -m pipeline.data_export --out $(FASHION_MNIST_OUT) --split all

constraints: install
	# --all keeps wheel (astunparse needs it at run time, and the image's `pip check` says so);
	# pip and setuptools come with every Python and venv.
	{ head -n 2 constraints.txt; $(PY) -m pip freeze --all --exclude-editable | grep -v -E '^(-e|pip==|setuptools==)'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf outputs .pytest_cache
