# make run: start sbc on conf/sbc.toml (loopback lab). make test: the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= conf/sbc.toml

.PHONY: run test bench fuzz check-config clean

$(BIN)/sbc: pyproject.toml setup.py sbc/sip/_fast.c sbc/net/_srtp.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(BIN)/sbc
	$(BIN)/sbc run --config $(CONFIG)

check-config: $(BIN)/sbc
	$(BIN)/sbc check-config $(CONFIG)

test: $(BIN)/sbc
	$(BIN)/pytest

bench: $(BIN)/sbc
	$(BIN)/python bench/run.py

# A longer fuzz run than the one in `make test` (docs/fuzz.md); SBC_FUZZ_SEED varies it.
fuzz: $(BIN)/sbc
	SBC_FUZZ_EXAMPLES=$${SBC_FUZZ_EXAMPLES:-10000} $(BIN)/pytest tests/fuzz -x

clean:
	rm -rf $(VENV) var build *.egg-info sbc/sip/_fast*.so sbc/net/_srtp*.so
