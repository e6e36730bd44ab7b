# The two commands of the README. Each sets everything up first (idempotent), then runs.
.PHONY: setup demo test notebooks bench-ingest bench-cone

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/userbatch demo

test:
	./scripts/setup.sh --services
	.venv/bin/python -m pytest -q

notebooks: setup
	.venv/bin/python -m pytest -q tests/test_notebooks.py

bench-ingest: setup
	.venv/bin/python bench/ingest.py

bench-cone: setup
	.venv/bin/python bench/cone.py
