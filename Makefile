# make demo : create .venv if needed, install, run the main job on its embedded default
# make test : same set-up plus the test tools, then the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test install clean

$(VENV)/.base: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[viz,config]"
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -q -e ".[dev,viz,config]"
	touch $@

install: $(VENV)/.base

demo: $(VENV)/.base
	$(VENV)/bin/spikeforge train

# Backends that must be live: the tests fail at once if one is not (a missing C compiler
# would otherwise skip every fused-kernel test and leave a green run). `make test REQUIRE=`
# runs without the requirement.
REQUIRE ?= cpu

test: $(VENV)/.dev
	SPIKEFORGE_REQUIRE_BACKENDS=$(REQUIRE) $(PY) -m pytest

clean:
	rm -rf $(VENV) build src/*.egg-info
