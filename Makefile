# wakeproxy: `make run` (demo) and `make test` (whole suite) set everything up on a fresh machine.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: run test test-unit test-podman images docker tools venv bench bench-smoke soak clean clean-demo

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py wakeproxy/http/_fieldscan.c
	bash scripts/ensure-python.sh "$(PYTHON)" "$(VENV)"
	$(VENV)/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat 2>&1 | bash scripts/quiet-noise.sh
	touch $@

docker:
	bash scripts/ensure-docker.sh

images: docker venv
	bash scripts/build-images.sh

tools:
	bash scripts/ensure-test-tools.sh

test: venv images tools
	$(PY) -m pytest -q

test-unit: venv
	$(PY) -m pytest -q -m "not docker"

# Opt-in: the Docker runtime against a private Podman service (tests/test_podman.py starts and removes it).
test-podman: venv images
	bash scripts/ensure-podman.sh
	$(PY) -m pytest -q -m podman tests/test_podman.py

run: venv images
	bash scripts/run-demo.sh

bench: venv images tools
	$(PY) -m bench.run

bench-smoke: venv images tools
	$(PY) -m bench.run --smoke

# not in CI: SOAK_MINUTES (30), SOAK_INSTANCES (50), SOAK_CLIENTS (16), SOAK_ENGINE_RESTARTS (2), SOAK_IDLE (3s)
soak: venv images tools
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) *.egg-info _trial_temp bench/results/*.json

clean-demo:
	docker ps -aq --filter label=wakeproxy.demo=1 | xargs -r docker rm -f >/dev/null
	docker rm -f wakeproxy-demo-home >/dev/null 2>&1 || true
	rm -rf build/demo
