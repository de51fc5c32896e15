# The two commands of the README: `make demo` and `make test`. Both install what they need first.
# `make soak` is the reliability soak at its small size, which CI runs after the tests.
UV := $(shell command -v uv 2>/dev/null)

.PHONY: setup demo test lint bench soak

setup:
ifndef UV
	python3 -m pip install --quiet "uv>=0.5"
endif
	uv sync --frozen --quiet

demo: setup
	uv run recipes demo

lint: setup
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy

test: setup lint
	uv run pytest -n 2 --dist worksteal

bench: setup
	uv run recipes bench

soak: setup
	RECIPES_SOAK=1 uv run pytest tests/soak
