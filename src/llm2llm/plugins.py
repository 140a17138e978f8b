"""Pluggable parts (task, teacher, student) by name: a built-in dict per kind, names that installed packages register
as entry points (the group `llm2llm.tasks`, `llm2llm.teachers` or `llm2llm.students`), or an explicit
'package.module:Class' for your own code.

Whatever the name resolves to must be a class with the methods of the kind's Protocol; anything else (a function
such as 'os:system', a module, a constant) is refused before it is called.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any

from llm2llm.errors import ConfigError


def load_class(spec: str, registry: dict[str, str], key: str, protocol: type, group: str) -> type:
    """The class a config value names: a key of `registry`, an entry point of `group`, or 'package.module:Class'."""
    registered = {} if spec in registry else {point.name: point for point in entry_points(group=group)}
    if spec in registry:
        found = _import(registry[spec], key)
    elif spec in registered:
        try:
            found = registered[spec].load()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{key}: cannot load {spec!r}, registered as {registered[spec].value!r} by an installed "
                              f"package ({exc}); reinstall that package") from None
    elif ":" in spec:
        found = _import(spec, key)
    else:
        known = ", ".join([*registry, *registered])
        raise ConfigError(f"{key}: unknown value {spec!r}; known: {known}, or 'package.module:Class' for your own class")
    where = f"{protocol.__module__}.{protocol.__name__}"
    if not inspect.isclass(found):
        what = "a module" if inspect.ismodule(found) else f"a {type(found).__name__}"
        raise ConfigError(f"{key}: {spec!r} is {what}, not a class; name a class that implements {where}")
    missing = [name for name in _methods(protocol) if not callable(getattr(found, name, None))]
    if missing:
        raise ConfigError(f"{key}: {spec!r} is not a {protocol.__name__}: it lacks {', '.join(missing)} (see {where})")
    return found


def _import(target: str, key: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{key}: {target!r} is not of the form 'package.module:Class'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise ConfigError(f"{key}: cannot import {target!r} ({exc})") from None


def _methods(protocol: type) -> list[str]:
    """The public methods a Protocol declares (its data attributes may be set per instance, so they are not checked)."""
    return [name for name, member in vars(protocol).items() if not name.startswith("_") and callable(member)]
