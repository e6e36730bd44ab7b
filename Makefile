# The two commands of the README. Each sets everything up first (idempotent), then runs.
.PHONY: setup demo test check notebooks docs bench-ingest bench-cone

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/userbatch demo

test:
	./scripts/setup.sh --services
	.venv/bin/python -m pytest -q

# The fast tier for the edit loop (a minute or two): no Spark runs through the worker — the API and its
# authorisation, tokens, the ledger, run identity and isolation's pure parts, the sky, deploy renders.
check: setup
	.venv/bin/python -m pytest -q -x tests/test_api.py tests/test_tokens.py tests/test_run_identity.py \
	  tests/test_ledger.py tests/test_catalog.py tests/test_sky.py tests/test_deploy.py tests/test_schedulers.py \
	  tests/test_cluster_runners.py -m "not slow"

notebooks: setup
	.venv/bin/python -m pytest -q tests/test_notebooks.py

# The documentation site (Sphinx; warnings are errors, as in tests/test_docs.py): docs/_build/html/index.html
docs: setup
	.venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

bench-ingest: setup
	.venv/bin/python bench/ingest.py

bench-cone: setup
	.venv/bin/python bench/cone.py
