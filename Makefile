# supportlm: `make all` (setup + whole pipeline) and `make test` do everything on a fresh clone.
# PROFILE=cpu|gpu|smoke merges profiles/<name>.yaml into params.yaml before running (unset: params.yaml as is).
# GPUS=N (with a PROFILE) trains in N processes under accelerate launch: one per GPU (gloo processes on a CPU host).
# FSDP=1 (with GPUS) shards the model across those processes instead of copying it to each (train.strategy=fsdp;
# bf16 LoRA: the gpu profile's 4-bit QLoRA cannot be sharded here, so it also sets train.method=lora).

SHELL        := /bin/bash
PYTHON       ?= python3
VENV         := .venv
BIN          := $(VENV)/bin
STAMP        := $(VENV)/.installed
CONSTRAINTS  := requirements/constraints-cpu.txt
EXTRAS       := labels,train,eval,serve,bench,profile,dev
PROFILE      ?=
GPUS         ?=
FSDP         ?=
SETS         := $(if $(GPUS),--set train.num_processes=$(GPUS)) $(if $(FSDP),--set train.strategy=fsdp --set train.method=lora)
export PATH  := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false
ifneq ($(PROFILE),gpu)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
endif

.DEFAULT_GOAL := help

# Setup ---------------------------------------------------------------------------------
.PHONY: setup
setup: $(STAMP)  ## create .venv and install the pinned stack (idempotent)

# llama-cpp-python is installed as the Python binding alone (no second llama.cpp compile): it loads the
# shared libllama that `make llama-tools` builds once (supportlm.llamacpp points LLAMA_CPP_LIB_PATH at it).
LLAMA_BINDING_ONLY := CMAKE_ARGS="-DLLAMA_BUILD=OFF"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	$(LLAMA_BINDING_ONLY) $(BIN)/pip install -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	$(BIN)/pip check
	touch $@

# Pipeline ------------------------------------------------------------------------------
# DOCKER=1 (implied by PROFILE=gpu): every stage in the training image; the host needs only make and Docker.
.PHONY: all profile repro dag push pull data-bench train-startup train-precision docker-all
ifneq ($(DOCKER)$(filter gpu,$(PROFILE)),)
all: docker-all
else
all: setup llama-tools profile repro  ## setup + the whole DVC pipeline (PROFILE=smoke|cpu|gpu; DOCKER=1: in containers, as PROFILE=gpu always is)
endif

docker-all: docker-build-train  ## every stage in the training image, in graph order (DRY_RUN=1 prints the plan)
	PROFILE=$(PROFILE) GPUS=$(GPUS) FSDP=$(FSDP) DRY_RUN=$(DRY_RUN) bash scripts/docker_all.sh $(TRAIN_IMAGE)

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TRAIN_IMAGE := supportlm-train:$(VERSION)
SERVE_IMAGE := supportlm-serve:$(VERSION)
LLAMA_IMAGE := supportlm-llama:$(VERSION)
# Images: every Dockerfile takes its base as BASE_IMAGE (default: the public Debian image pinned in the
# Dockerfile). No registry reachable? `make base-image` builds the same distribution from Debian packages and
# the builds use it. CA_BUNDLE reaches apt/pip inside the build as a BuildKit secret (never in a layer).
LOCAL_BASE   := supportlm-base:bookworm
CA_BUNDLE    ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
comma        := ,
CA_SECRET     = $(if $(CA_BUNDLE),--secret id=ca$(comma)src=$(CA_BUNDLE))
BASE          = $${BASE_IMAGE:-$$(bash scripts/docker_base.sh docker/Dockerfile.llama $(LOCAL_BASE))}
DOCKER_BUILD  = base="$(BASE)" && bash scripts/docker_build.sh $(CA_SECRET) --build-arg BASE_IMAGE="$$base" \
                --build-arg LLAMA_IMAGE=$(LLAMA_IMAGE)
.PHONY: base-image docker-build docker-build-llama docker-build-serve docker-build-train docker-build-prometheus lock-image pin-images
base-image:  ## the Debian bookworm base from Debian packages (debootstrap), for hosts that cannot pull the pinned one
	bash scripts/base_image.sh $(LOCAL_BASE)

docker-build-llama:  ## llama.cpp built once for both images (x86-64-v3, never AMX); BASE_IMAGE=... to override the base
	$(DOCKER_BUILD) -f docker/Dockerfile.llama -t $(LLAMA_IMAGE) .

docker-build-serve: docker-build-llama  ## the serving image (gateway + llama-server, non-root)
	$(DOCKER_BUILD) -f docker/Dockerfile.serve -t $(SERVE_IMAGE) .

docker-build-train: docker-build-llama  ## the training image (every stage; CPU here, CUDA on a GPU host; ~7 GB)
	$(DOCKER_BUILD) -f docker/Dockerfile.train -t $(TRAIN_IMAGE) .

PROM_IMAGE := supportlm-prometheus:$(VERSION)
docker-build-prometheus:  ## Prometheus for the compose stack, from Debian's package (its config checked by promtool)
	$(DOCKER_BUILD) -f docker/Dockerfile.prometheus -t $(PROM_IMAGE) docker

docker-build: docker-build-serve docker-build-train docker-build-prometheus  ## every image

pin-images:  ## on a host that reaches the registries: pin every pulled image (TGI, Grafana, Debian base) by its digest, in place
	bash scripts/pin_images.sh

lock-image:  ## regenerate requirements/lock-train-image.txt (the training image's hashed lock) in the image's base
	base="$(BASE)" && bash scripts/lock_image.sh "$$base" $(CA_BUNDLE)

profile: setup
ifneq ($(PROFILE),)
	$(BIN)/supportlm params apply-profile $(PROFILE) $(SETS)
else ifneq ($(GPUS),)
	$(error GPUS=$(GPUS) needs a PROFILE to apply it with, e.g. make all PROFILE=gpu GPUS=$(GPUS))
else ifneq ($(FSDP),)
	$(error FSDP=$(FSDP) needs a PROFILE and GPUS, e.g. make all PROFILE=gpu GPUS=4 FSDP=1)
endif

repro: setup  ## dvc repro (reruns only what changed)
	$(BIN)/supportlm params check > /dev/null
	$(BIN)/dvc repro

dag: setup  ## print the stage graph
	$(BIN)/dvc dag

push: setup  ## push data and models to the default DVC remote
	$(BIN)/dvc push

pull: setup  ## pull data and models from the default DVC remote
	$(BIN)/dvc pull

data-bench: setup  ## time ingest, clean, split, quality, format at 27K, 270K and 1M rows (~1 h on 2 cores) -> reports/data_scaling.json
	$(BIN)/supportlm data-bench --rows 27000 --rows 270000 --rows 1000000
	$(BIN)/dvc repro --force --single-item report

train-startup: setup  ## training start-up before/after and 1 vs 2 processes, one run (~10 min) -> reports/train_startup.json
	$(BIN)/python scripts/train_startup.py
	$(BIN)/dvc repro --force --single-item report

train-precision: setup  ## bf16 autocast vs fp32 CPU training, one whole CPU-default run each (~10 min) -> reports/train_precision.json
	$(BIN)/python scripts/train_precision.py
	$(BIN)/dvc repro --force --single-item report

llama-tools: setup  ## build llama.cpp once: llama-server/quantize/bench + libllama for the binding (cached per CPU in ~/.cache/supportlm)
	$(BIN)/python -m supportlm.llamacpp

sweep: setup  ## hyperparameter sweep of the train stage (params.yaml `sweep:`) -> reports/sweep.{json,md} (~20 min)
	$(BIN)/supportlm params check > /dev/null
	$(BIN)/supportlm sweep
	$(BIN)/dvc repro --force --single-item report

mlflow-ui: setup  ## browse training runs (sqlite store in mlflow.db)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

ifeq ($(PROFILE),gpu)
bench: setup profile  ## rerun the bench stage (Locust vs gateway + engine at 1/4/8/16 users, ~5 min) and the report; PROFILE=gpu: against TGI
else
bench: setup llama-tools profile
endif
	$(BIN)/dvc repro --force --single-item bench
	$(BIN)/dvc repro --force --single-item report

containers-report: setup  ## image sizes/build times, make all DOCKER=1 PROFILE=smoke vs host, compose ready -> reports/containers.json (COLD=1: prune the build cache first)
	$(BIN)/supportlm containers-report $(if $(COLD),--cold)
	$(BIN)/dvc repro --force --single-item report

report: setup  ## reports/index.{md,html} from every stage's JSON (forced: sweep/human-eval/data-bench files are not deps)
	$(BIN)/dvc repro --force --single-item report

# Serving -------------------------------------------------------------------------------
.PHONY: serve llama-tools mlflow-ui sweep bench report containers-report
serve: setup  ## gateway + llama-server on models/gguf/model-served.gguf, the variant the quantize stage's rule chose (needs SUPPORTLM_API_KEYS=id:key)
	$(BIN)/supportlm serve

# GPU check (issue 14) ------------------------------------------------------------------
.PHONY: gpu-check gpu-check-wheels
gpu-check: $(if $(TINY),setup)  ## QLoRA, kill+resume, merge, generation, bitsandbytes on a random 7B-shaped model -> reports/gpu/ (~5 min, one GPU, the host's torch stack + .whl/); TINY=1: CPU, ~40 s -> reports/gpu/tiny/
	$(if $(TINY),$(BIN)/python -m supportlm.gpu_check --tiny,PATH="$${PATH#$(CURDIR)/$(BIN):}" bash scripts/gpu_check_device.sh) $(GPU_CHECK_ARGS)

gpu-check-wheels:  ## the wheels gpu-check carries to a GPU host without network (bitsandbytes, pydantic) -> .whl/ (~27 MB)
	bash scripts/gpu_check_wheels.sh

# Tests ---------------------------------------------------------------------------------
.PHONY: test test-unit test-data test-integration test-docker
test: setup  ## every test tier except GPU-only ones (what CI runs)
	$(BIN)/python -m pytest -m "not gpu" tests

test-unit: setup  ## fast unit tier
	$(BIN)/python -m pytest tests/unit

test-data: setup  ## checks on the real Bitext sample and the pipeline's own outputs
	$(BIN)/python -m pytest tests/data

test-docker: setup  ## the docker tier: build the images, DOCKER=1 smoke vs host, compose stack, serving contract (needs a Docker engine)
	$(BIN)/python -m pytest tests/docker

test-integration: setup  ## DVC / stage runs on tiny data
	$(BIN)/python -m pytest tests/integration

# Style ---------------------------------------------------------------------------------
.PHONY: lint format
lint: setup
	$(BIN)/ruff check src stages tests

format: setup
	$(BIN)/ruff format src stages tests

# Cleaning ------------------------------------------------------------------------------
.PHONY: clean help
clean:  ## remove caches (keeps .venv, data and the DVC cache)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

help:
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'
