# imageshelf: `make run` starts the whole service locally, `make test` runs every test.
# Both create .venv (Python 3.12, the Lambda runtime) and install the pinned dependencies.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAGE ?= dev

.PHONY: run test lint load bench package deploy destroy provision admin-token upload-token render-key reprocess reconcile clean

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@if test -x $(PY); then echo "Updating .venv: the requirements changed (usually a few seconds)..."; \
	else echo "Installing dependencies into .venv (first run only, usually 1-2 minutes; pip is quiet meanwhile)..."; \
	"$$(tools/find-python)" -m venv $(VENV); fi
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

run: $(STAMP)
	$(PY) -m tools.devserver --reload $(if $(PORT),--port $(PORT)) $(if $(S3_PORT),--s3-port $(S3_PORT)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# The reconciler beside `chalice local` (`make run` runs its own): at start, then every minute.
reconcile: $(STAMP)
	$(PY) -m tools.reconcile

test: $(STAMP)
	$(PY) -m pytest

# Fetches 76 real wallpapers (pinned Debian packages) and compares this pipeline with pyvips,
# plain Pillow and Wand/ImageMagick, one image per fresh process; draws docs/bench.png.
bench: $(STAMP)
	bash bench/run.sh $(BENCH_ARGS)

# 8 clients upload 200 real photos through presigned POSTs to a fresh local stack (not part of `make test`).
load: $(STAMP)
	$(PY) -m tools.loadtest $(if $(URL),--url $(URL))

# `chalice package --pkg-format terraform` into build/$(STAGE), then check the zip and the Terraform.
package: $(STAMP)
	$(PY) -m tools.deploy package --stage $(STAGE) --out build/$(STAGE)
	$(PY) -m tools.package_check build/$(STAGE)

# REGION=eu-west-1 deploys (or provisions, or destroys) the stage in another region than the
# session's; a region other than the stage's home is a regional copy (docs/deploy.md, "Regions").
provision: $(STAMP)
	$(PY) -m tools.provision --stage $(STAGE) $(if $(REGION),--region $(REGION))

# Buckets, CDN, dead-letter queue, then `chalice deploy`, then throttling and alarms (needs AWS credentials).
deploy: $(STAMP)
	$(PY) -m tools.deploy deploy --stage $(STAGE) $(if $(REGION),--region $(REGION))

# Removes what deploy made; buckets holding uploads or images stay unless DELETE_BUCKETS=1.
destroy: $(STAMP)
	$(PY) -m tools.deploy destroy --stage $(STAGE) $(if $(REGION),--region $(REGION)) $(if $(DELETE_BUCKETS),--delete-buckets)

# A new random admin token in the stage's SSM parameter: turns deletion on, or rotates the token.
admin-token: $(STAMP)
	$(PY) -m tools.deploy admin-token --stage $(STAGE) $(if $(REGION),--region $(REGION))

# A new random upload token in the stage's SSM parameter, for a stage that asks for one
# (UPLOAD_TOKEN_PARAMETER, docs/deploy.md): opens uploads to its holders, or rotates it.
upload-token: $(STAMP)
	$(PY) -m tools.deploy upload-token --stage $(STAGE) $(if $(REGION),--region $(REGION))

# A new random render signing key in the stage's SSM parameter (RENDER_SIGNING_KEY_PARAMETER): renders
# other than presets need URLs signed with it (docs/deploy.md, "Render key"); running it again rotates it.
render-key: $(STAMP)
	$(PY) -m tools.deploy render-key --stage $(STAGE) $(if $(REGION),--region $(REGION))

# Backfill: images processed before today's settings get their placeholder and the WebP/AVIF copies
# (RENDITION_FORMATS) of their renditions; idempotent. STAGE=prod with AWS credentials for a deployed stage.
reprocess: $(STAMP)
	$(PY) -m tools.reprocess --stage $(if $(filter command line,$(origin STAGE)),$(STAGE),local)

# ruff (lint and format) on the whole tree; mypy on app.py, chalicelib, tools and the client
# ([tool.mypy] in pyproject.toml). CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build .pytest_cache test-artifacts
