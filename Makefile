# The two commands of the README: `make demo` and `make test`. Both install what they need first.
# `make soak` is the reliability soak at its small size, which CI runs after the tests; `make containers`
# builds deploy/Dockerfile with podman and runs the topology in containers (tests/containers).
UV := $(shell command -v uv 2>/dev/null)

.PHONY: setup demo test lint browser bench soak containers

# Bytecode is compiled once, at install: where PYTHONDONTWRITEBYTECODE is set (CI's machines), every
# process would otherwise compile Prefect from source as it imports it (seconds of CPU per process).
setup:
ifndef UV
	python3 -m pip install --quiet "uv>=0.5"
endif
	uv sync --frozen --quiet --compile-bytecode

demo: setup
	uv run recipes demo

lint: setup
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy

# The Prefect UI test (tests/e2e/test_prefect_ui.py) drives Debian's chromium, headless. CI installs it;
# elsewhere a missing chromium skips that test, saying so.
browser:
ifneq ($(filter 1 true yes,$(CI)),)
	command -v chromium >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
endif

test: setup lint browser
	uv run pytest -n 2 --dist load

bench: setup
	uv run recipes bench

soak: setup
	RECIPES_SOAK=1 uv run pytest tests/soak

# Debian's podman needs runc (crun refuses hybrid cgroups) and debootstrap for the local base image.
containers: setup
	command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap; }
	dev/containers/make-base.sh
	RECIPES_CONTAINERS=1 uv run pytest tests/containers
