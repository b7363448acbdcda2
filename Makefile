# detkd: the two commands are `make demo` and `make test`; both bootstrap .venv when missing.
PY := .venv/bin/python
STAMP := .venv/.detkd-bootstrap-ok

.PHONY: bootstrap test test-fast lint format demo bench device-prep clean

$(STAMP): requirements.txt setup.py scripts/bootstrap.sh
	bash scripts/bootstrap.sh

bootstrap: $(STAMP)

# pytest exits 5 when it collected no test: that must fail, not pass
test: $(STAMP)
	$(PY) -m pytest tests -q -ra --durations=15 ; rc=$$? ; \
	  if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

# ruff: lint (pycodestyle, pyflakes, import order) and format, line length 100 (pyproject.toml)
lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: $(STAMP)
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow"

demo: $(STAMP)
	$(PY) -m detkd.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_distill.py --write BENCHMARKS.md

# what the GPU check needs on a machine without network, into .device/ (ignored):
# make device-prep DETECTRON2_GIT=path/to/a/detectron2/clone; then, on the GPU machine,
# bash scripts/device_check.sh (README: "Proven on a GPU")
device-prep: $(STAMP)
	bash scripts/device_prep.sh $(DETECTRON2_GIT)

clean:
	rm -rf output .pytest_cache
