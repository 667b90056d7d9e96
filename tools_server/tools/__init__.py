"""The tool set. `default_registry()` registers every tool; `ALL_TOOLS` lists their classes.

Tools are found in the family modules below, in module order and then in the order their
classes are defined: adding a tool is defining its class in one of these modules.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from tools_server.registry import FAMILIES, Tool, ToolRegistry
from tools_server.tools import chart, code, diagram, math_tools, perception

_MODULES = (perception, chart, diagram, math_tools, code)


def _tools_of(module) -> list[type[Tool]]:
    # A module's namespace keeps definition order, which is the order we want.
    return [c for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, Tool) and c.__module__ == module.__name__
            and "name" in vars(c) and not inspect.isabstract(c)]


ALL_TOOLS: tuple[type[Tool], ...] = tuple(
    sorted((c for m in _MODULES for c in _tools_of(m)), key=lambda c: FAMILIES.index(c.family)))


def default_registry(options: Mapping[str, Mapping[str, Any]] | None = None) -> ToolRegistry:
    """A fresh registry with every tool of this package, in a stable order.

    `options[name]` are keyword arguments for that tool's constructor (its backend, model
    path, ...); a name that is not a tool is an error.
    """
    options = dict(options or {})
    unknown = set(options) - {c.name for c in ALL_TOOLS}
    if unknown:
        raise ValueError(f"options for unknown tool(s) {sorted(unknown)}; tools: "
                         f"{', '.join(c.name for c in ALL_TOOLS)}")
    return ToolRegistry([cls(**options.get(cls.name, {})) for cls in ALL_TOOLS])


__all__ = ["ALL_TOOLS", "default_registry"]
