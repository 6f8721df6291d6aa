# The usual workflows. Each target is one plain command (shown in the README too); override the variables on the
# command line, e.g. `make train CONFIG=cpu_quick DEVICE=cpu` or `make eval WEIGHTS=outputs/run/model_inference.pth`.
CONFIG     ?= market1501_strong_baseline
DATA_ROOT  ?= $(REID_DATA_ROOT)
OUTPUT_DIR ?= outputs/$(notdir $(basename $(CONFIG)))
DEVICE     ?= auto
WEIGHTS    ?= $(OUTPUT_DIR)/model_inference.pth
GALLERY    ?= outputs/gallery
DATA_FLAG   = $(if $(DATA_ROOT),--data-root "$(DATA_ROOT)",)

.PHONY: help install test lint format typecheck docs train eval demo download app docker-build docker-run

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## the library, every extra and the development tools, editable
	pip install -e ".[dev]"

test:  ## the notebooks, then tests/ (the README's test command)
	nbdev-test --n-workers 2 && pytest -q tests

lint:  ## ruff's checks over the package, the notebooks, the benchmarks and the tests
	ruff check secondsight nbs benchmarks tests

format:  ## ruff's formatter over the benchmarks and the tests (the notebooks keep fastcore's style)
	ruff format benchmarks tests

typecheck:  ## mypy over the package, with the settings in pyproject.toml
	mypy

docs:  ## export, clean and build the docs site into _docs/ (needs Quarto: ../shared/tools/install-quarto)
	nbdev-export && nbdev-clean && nbdev-docs

train:  ## train CONFIG (a recipe name or a YAML file) into OUTPUT_DIR
	secondsight-train --config $(CONFIG) $(DATA_FLAG) --output-dir $(OUTPUT_DIR) --device $(DEVICE)

eval:  ## the scorecard of WEIGHTS, with re-ranking
	secondsight-evaluate --weights $(WEIGHTS) $(DATA_FLAG) --output-dir $(OUTPUT_DIR) --device $(DEVICE) --rerank

demo:  ## the first look: a quick model (or WEIGHTS if that file exists), a search and its pictures
	secondsight-demo $(DATA_FLAG) --device $(DEVICE) $(if $(wildcard $(WEIGHTS)),--weights $(WEIGHTS),)

download:  ## Market-1501 with kagglehub (network and a Kaggle account)
	secondsight-download

app:  ## the web app on http://127.0.0.1:7860: search GALLERY (a folder of crops) with WEIGHTS
	secondsight-app $(if $(wildcard $(WEIGHTS)),--weights $(WEIGHTS) --gallery $(GALLERY),) --device $(DEVICE)

docker-build:  ## the web app's container image (Dockerfile; never built by us: no Docker engine on our machines)
	docker build -t secondsight-app .

docker-run:  ## the container, published on 127.0.0.1:7860 only, ./outputs mounted (WEIGHTS and GALLERY inside it)
	docker run --rm -p 127.0.0.1:7860:7860 -v "$(CURDIR)/outputs:/home/app/outputs" secondsight-app --weights $(WEIGHTS) --gallery $(GALLERY)
