# Everyday commands. `make install` builds .venv with the torch pin first, then the project (which then keeps that
# torch); with TORCH_INDEX set to PyTorch's CPU index the pin is the CPU build.
PY := .venv/bin/python
TORCH_PIN ?= torch==2.13.0
# Where pip looks for torch. Empty: pip's own configuration (CI's machines hold the CPU wheel locally).
# On Linux PyPI's torch is the CUDA build (GBs); TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU one.
TORCH_INDEX ?=

.PHONY: install demo test bench bench-table grid scale quality

install: .venv/.installed

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet $(TORCH_PIN) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[test,plot,tensorboard]'
	touch $@

# Train the demo config for half a minute and print a sample: what a newcomer runs first.
demo: install
	.venv/bin/rnnlm train configs/demo.yaml --name demo-$$(date +%s) --out checkpoints
	.venv/bin/rnnlm sample $$(ls -td checkpoints/demo-* | head -1) --seed 1

test: install
	$(PY) -m pytest -q

# The headline table (about 15 minutes on 2 cores), then the grid of shapes (about 25 minutes for the three cells).
bench: bench-table grid

bench-table: install
	$(PY) bench/speed.py

grid: install
	$(PY) bench/speed.py --grid

scale: install
	$(PY) bench/scale.py

quality: install
	$(PY) bench/quality.py
