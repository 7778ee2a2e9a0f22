# make demo : create .venv if needed, install, run the main job on its embedded default
# make test : same set-up plus the test tools, then the test suite, then the NIR peer tests (make interop)
# make docs : same set-up plus the docs extra, then the documentation site into site/ (mkdocs build --strict)
# make interop : .venv-interop with the NIR peers (tests/interop/requirements.txt), then tests/interop
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first, pinned. On this project's machines pip finds a CPU build of
# torch 2.13.0 (Python 3.11, x86_64, a 190 MB wheel) on local disk (its find-links) and
# takes it: no download. An unpinned torch (or a range that admits a newer release) resolves
# to a CUDA build of several GB from PyPI instead, and so does this pin on a machine without
# that file (PyPI's Linux x86_64 torch is the CUDA build): there, point TORCH at a CPU wheel
# (make TORCH=/path/to/torch-2.13.0+cpu-....whl).
TORCH  ?= torch==2.13.0
# The NIR peers' venv (make interop; make test runs it too)
IVENV  := .venv-interop
IPY    := $(IVENV)/bin/python
IREQ   := tests/interop/requirements.txt

.PHONY: demo test docs interop install clean

$(VENV)/.base: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[viz,config]"
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -q -e ".[dev,viz,config,nir,docs]"
	touch $@

$(VENV)/.docs: $(VENV)/.base
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

install: $(VENV)/.base

demo: $(VENV)/.base
	$(VENV)/bin/spikeforge train

# Backends that must be live: the tests fail at once if one is not (a missing C compiler
# would otherwise skip every fused-kernel test and leave a green run). `make test REQUIRE=`
# runs without the requirement.
REQUIRE ?= cpu

# The registry-driven test matrix runs a second time for the built-in neurons written as
# equations (sf.neurons.from_equations; tests/equation_neurons.py registers them as Equation<Name>).
EQ_MATRIX := tests/test_neurons.py tests/test_kernels_cpu.py tests/test_nir.py tests/test_module_classes.py \
	tests/test_eventprop.py tests/test_errors.py tests/test_functional.py tests/test_custom_ops.py \
	tests/test_triton.py tests/test_distributed.py

test: $(VENV)/.dev $(IVENV)/.ok
	SPIKEFORGE_REQUIRE_BACKENDS=$(REQUIRE) $(PY) -m pytest
	SPIKEFORGE_REQUIRE_BACKENDS=$(REQUIRE) SPIKEFORGE_EQUATION_NEURONS=1 PYTHONPATH=tests \
		$(PY) -m pytest -p equation_neurons -k Equation $(EQ_MATRIX)
	$(IPY) -m pytest -o addopts=-q tests/interop

# The NIR peers (snnTorch, SpikingJelly, Norse, Rockpool, Sinabs) in a venv of their own, on the same
# torch pin: lines marked "# peer" in the requirements go in with --no-deps (their declared
# dependencies drag in torchvision, torchaudio, samna...), the rest (what the peers import) with theirs.
# pip's closing "requires ..., which is not installed" warnings are expected.

$(IVENV)/.ok: pyproject.toml $(IREQ)
	test -x $(IPY) || python3 -m venv $(IVENV)
	$(IPY) -c "import torch" 2>/dev/null || $(IPY) -m pip install -q "$(TORCH)"
	grep '# peer' $(IREQ) | $(IPY) -m pip install -q --no-deps -r /dev/stdin
	grep -v '# peer' $(IREQ) | $(IPY) -m pip install -q -r /dev/stdin
	$(IPY) -m pip install -q -e ".[nir]" pytest
	$(IPY) -c "import snntorch.export_nir, snntorch.import_nir, norse.torch, sinabs.nir, rockpool.nn.modules.torch.nir, spikingjelly.activation_based.nir_exchange, xylosim.v1, xylosim.v2"
	touch $@

# The documentation site (mkdocs.yml, docs/): any warning fails the build. tests/test_docs.py
# builds it too and runs every tutorial's code.
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

interop: $(IVENV)/.ok
	$(IPY) -m pytest -o addopts=-q tests/interop

clean:
	rm -rf $(VENV) $(IVENV) build site src/*.egg-info
