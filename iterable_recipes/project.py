"""Where the project's own files are: a checkout's top level, else the copies the wheel carries.

prefect.yaml and automations/ are written once, at the top of the checkout; ``uv build`` copies them
into the wheel under ``iterable_recipes/bundled/`` (pyproject.toml, force-include).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = PACKAGE_DIR / "bundled"


def checkout_dir() -> Path | None:
    """The checkout this package runs from (it holds pyproject.toml and dev/), or None when installed."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "dev").is_dir() else None


def project_file(name: str) -> Path:
    """``name`` (a file or folder of the checkout's top level) in the checkout, else in the wheel."""
    root = checkout_dir()
    return root / name if root is not None else BUNDLED_DIR / name
