"""Load a YAML file into a pydantic model, with errors that name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message says where and why."""


def describe_errors(path: Path | str, err: ValidationError) -> str:
    """One line per problem: ``file: key.path: message``."""
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"{path}: {key}: {problem['msg']}")
    return "\n".join(lines)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The parser's problem and where, on one line (its own text spans several, quoting the file)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def load_yaml_model(path: Path | str, model: type[ModelT]) -> ModelT:
    """Read ``path`` and validate it as ``model``; raise ConfigError naming file, key and problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    try:
        return model.model_validate(raw if raw is not None else {}, context={"path": str(path)})
    except ValidationError as exc:
        raise ConfigError(describe_errors(path, exc)) from exc
