# The two commands of the README. Each sets everything up first (idempotent), then runs.
.PHONY: setup demo test check notebooks docs bench-ingest bench-cone

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/userbatch demo

# The full suite, as CI runs it: every tier, hypothesis derandomised (the same examples every run).
test:
	./scripts/setup.sh --services
	.venv/bin/python -m pytest -q --hypothesis-profile=ci

# The fast tier for the edit loop (under 3 minutes on 2 cores, one Spark session): every test not marked slow
# (multi-process: spark-submit runs, servers, kernels), cluster (a Spark cluster) or heavy (large Spark work), so
# a new test is in it unless marked. Hypothesis explores new random examples each run (failures replay from
# .hypothesis/).
check: setup
	.venv/bin/python -m pytest -q -x -m "not slow and not cluster and not heavy" --hypothesis-profile=dev

notebooks: setup
	.venv/bin/python -m pytest -q tests/test_notebooks.py

# The documentation site (Sphinx; warnings are errors, as in tests/test_docs.py): docs/_build/html/index.html
docs: setup
	.venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

bench-ingest: setup
	.venv/bin/python bench/ingest.py

bench-cone: setup
	.venv/bin/python bench/cone.py
