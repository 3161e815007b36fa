# Everyday commands. `make install` builds .venv with the CPU torch pin first, so pip never pulls a CUDA build.
PY := .venv/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test bench quality

install: .venv/.installed

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test,plot,tensorboard]'
	touch $@

# Train the default config and print a sample: what a newcomer runs first.
demo: install
	.venv/bin/rnnlm train configs/tiny.yaml --name tiny-demo-$$(date +%s) --out checkpoints
	.venv/bin/rnnlm sample $$(ls -td checkpoints/tiny-demo-* | head -1) --num-samples 10 --seed 1

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/speed.py

quality: install
	$(PY) bench/quality.py
