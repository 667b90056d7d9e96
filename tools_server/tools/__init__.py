"""The tool set. `default_registry()` registers every tool; `ALL_TOOLS` lists their classes."""

from __future__ import annotations

from tools_server.registry import ToolRegistry
from tools_server.tools.chart import BarValues, ChartToTable
from tools_server.tools.diagram import DetectPoints, MeasureLength
from tools_server.tools.math_tools import Calculator, Statistics
from tools_server.tools.perception import Crop, Enhance, Rotate, Zoom

ALL_TOOLS = (Crop, Zoom, Rotate, Enhance, ChartToTable, BarValues, DetectPoints, MeasureLength,
             Calculator, Statistics)


def default_registry() -> ToolRegistry:
    """A fresh registry with every tool of this package, in a stable order."""
    return ToolRegistry([cls() for cls in ALL_TOOLS])


__all__ = ["ALL_TOOLS", "default_registry"]
