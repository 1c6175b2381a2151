# The two commands of the README:
#   make demo   set everything up (a virtual environment in .venv) and compare the bundled portraits
#   make test   set everything up and run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean milvus-server

$(BIN)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "facelens needs Python 3.11+"' \
	  || (echo "error: need Python 3.11 or newer as '$(PYTHON)' (make PYTHON=/path/to/python3.11)"; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dlib,permissive,dev,scale,openvino]'
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/facelens demo examples/portraits

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check facelens tests benchmarks
	$(BIN)/mypy

# Needs ../shared/data (not part of the test run); see BENCHMARKS.md.
bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet --no-deps face_recognition==1.3.0
	$(BIN)/python benchmarks/bench_lfw.py

clean:
	rm -rf $(VENV) .venv-milvus build *.egg-info

# A real Milvus server for tests/test_store_milvus_server.py (it starts and stops the server itself): the
# PyPI wheel `milvus` 2.3.5 (a standalone server with embedded etcd; deprecated, but real), in its own
# virtual environment so that its pins never touch facelens's. Production should run a current Milvus.
milvus-server: .venv-milvus/bin/milvus-server
.venv-milvus/bin/milvus-server:
	$(PYTHON) -m venv .venv-milvus
	.venv-milvus/bin/python -m pip install --quiet milvus==2.3.5
