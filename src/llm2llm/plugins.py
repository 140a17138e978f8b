"""One plain dict per kind of part (task, teacher, student) plus a 'package.module:Class' escape hatch."""

from __future__ import annotations

import importlib
from typing import Any

from llm2llm.errors import ConfigError


def load_class(spec: str, registry: dict[str, str], key: str) -> Any:
    """Import the class a config value names: a registry key or 'package.module:Class'."""
    target = registry.get(spec, spec)
    module_name, sep, class_name = target.partition(":")
    if not sep:
        raise ConfigError(f"{key}: unknown value {spec!r}; known: {', '.join(registry)} or 'package.module:Class'")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{key}: cannot import {target!r} ({exc})") from None
