# Everyday commands. `make install` builds .venv with the CPU torch pin first, so pip never pulls a CUDA build.
PY ?= .venv/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: install test bench quality

install:
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test]'

test:
	$(PY) -m pytest -q

bench:
	$(PY) bench/speed.py
