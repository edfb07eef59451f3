# make demo | make test | make bench   (each creates .venv when missing)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast bench clean

venv: $(STAMP)

# constraints.txt pins versions that install quickly here (torch 2.14.1 / torchvision 0.29.1 come from local disk).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: venv
	WANDB_MODE=offline $(BIN)/python -m pe_lightning fit --config configs/mnist_drawtext.yaml

test: venv
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: venv
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not slow"

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs lightning_logs wandb
