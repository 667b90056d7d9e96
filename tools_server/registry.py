"""Tool base class, results and the registry.

A tool is a class with a `name`, a `family`, a docstring (the description the model sees)
and an `Arguments` pydantic model. The model gives both the JSON Schema shown to the policy
(OpenAI function-calling shape) and the validation of its calls. `run` is synchronous and
a pure function of its arguments and images, run on a server thread. By default that is one
of the CPU threads (one per core): `run` may compute hard but should not wait (on I/O, a
subprocess, a sleep), since a waiting call idles a core's thread. A tool that mostly waits
(the python tool waits on its sandboxed subprocess) sets `blocking = True`: it then runs on
a separate, larger pool of threads, so that waiting calls cannot hold every CPU thread.
A call must end within the server's deadline, unless its tool enforces a time limit of its
own and says how long a call may take (`deadline_s`).

Result dicts (the wire contract):
    {"ok": true, "text": str, "images": [image_id, ...], "data": {...}}
    {"ok": false, "error": {"code": str, "message": str}}
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar, Protocol

import pydantic
from PIL import Image

FAMILIES = ("perception", "chart", "diagram", "math")

# Stable error codes of a tool-call result. The first five are the policy's fault (taxonomy
# E2/E3, see vista_jax.protocol); the rest are the service's. `transport_error` is produced
# by the client only.
UNKNOWN_TOOL = "unknown_tool"
UNKNOWN_ARGUMENT = "unknown_argument"
MISSING_ARGUMENT = "missing_argument"
INVALID_ARGUMENT = "invalid_argument"
IMAGE_NOT_FOUND = "image_not_found"
EXECUTION_FAILED = "execution_failed"
TIMEOUT = "timeout"
OVERLOADED = "overloaded"
ERROR_CODES = frozenset({UNKNOWN_TOOL, UNKNOWN_ARGUMENT, MISSING_ARGUMENT, INVALID_ARGUMENT,
                         IMAGE_NOT_FOUND, EXECUTION_FAILED, TIMEOUT, OVERLOADED})


class ToolError(Exception):
    """Raised by validation or by a tool's `run`; becomes an `ok: false` result."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def result(self) -> dict[str, Any]:
        return error_result(self.code, self.message)


def image_not_found(image_id: str, argument: str = "image") -> ToolError:
    """The error for an image id that names no stored image (the front's or a worker's)."""
    return ToolError(IMAGE_NOT_FOUND, f"argument '{argument}': image {image_id!r} not found "
                     "(upload it first, or use an id from the task or a tool result)")


def ok_result(text: str, images: list[str] | None = None,
              data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"ok": True, "text": text, "images": list(images or []), "data": dict(data or {})}


def error_result(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


@dataclasses.dataclass
class ToolOutput:
    text: str
    images: list[str] = dataclasses.field(default_factory=list)  # ids from ToolContext.add_image
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        return ok_result(self.text, self.images, self.data)


class ToolContext(Protocol):
    """What a running tool may use: the server's image store."""

    def image(self, image_id: str, *, argument: str = "image") -> Image.Image:
        """The stored image (read-only: do not modify it); ToolError(image_not_found) if absent."""

    def add_image(self, image: Image.Image) -> str:
        """Stores a produced image; returns its id."""


class ToolArguments(pydantic.BaseModel):
    """Base of every tool's arguments: unknown keys are errors, JSON types are not coerced."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class Tool:
    """A tool. Subclasses set `name`, `family`, the docstring and `Arguments`, and `run`.

    Model-backed tools set `model_backed = True` (on the class, or on the instance when only
    some backends use a model): when the server has a worker pool they run there
    (tools_server.pool), several calls at a time through `run_batch`, which such a
    tool overrides to do one batched forward pass. Tools with several backends take them as
    keyword options of `__init__` (e.g. `backend="hf", model_path=...`); `options` maps a
    tool name to those keywords in `tools_server.tools.default_registry`.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    Arguments: ClassVar[type[ToolArguments]]
    model_backed: ClassVar[bool] = False
    # True for tools that mostly wait rather than compute (a subprocess): the server runs them
    # on a separate thread pool, so that they cannot hold every CPU thread.
    blocking: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or not hasattr(cls, "name"):
            return
        if cls.family not in FAMILIES:
            raise TypeError(f"tool {cls.name}: family {cls.family!r} is not one of {FAMILIES}")
        if not cls.__doc__:
            raise TypeError(f"tool {cls.name}: the docstring is its description and must be set")

    @property
    def description(self) -> str:
        return inspect.cleandoc(type(self).__doc__ or "")

    def parameters_schema(self) -> dict[str, Any]:
        return _strip_titles(self.Arguments.model_json_schema())

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling entry, plus the tool's family."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.parameters_schema()},
                "family": self.family}

    def run(self, args: ToolArguments, ctx: ToolContext) -> ToolOutput:  # runs in a worker thread
        raise NotImplementedError

    def deadline_s(self, args: ToolArguments) -> float | None:
        """Seconds a call may take, queueing included, for a tool that enforces its own time
        limit and reports an overrun in its result; None (the default): no own limit.

        The server waits max(its `call_timeout_s`, this) before answering `timeout`, so that
        a limit the tool offers (the python tool's `timeout_s`) ends in the tool's own result.
        Called for every call: keep it cheap.
        """
        return None

    def load(self) -> None:
        """Loads weights ahead of the first call; a pool worker calls it before /readyz passes.

        No-op by default. Never load weights in `__init__`: the front constructs model-backed
        tools too (for their schemas and validation) and must stay light.
        """

    def run_batch(self, calls: list[tuple[ToolArguments, ToolContext]]
                  ) -> list[ToolOutput | ToolError]:
        """Runs several calls; one result (or ToolError) per call, in order.

        The default runs them one by one. A model-backed tool overrides it to share one
        forward pass; it must still isolate failures (one bad image fails its own call only).
        """
        results: list[ToolOutput | ToolError] = []
        for args, ctx in calls:
            try:
                results.append(self.run(args, ctx))
            except ToolError as exc:
                results.append(exc)
        return results


def _strip_titles(schema: Any) -> Any:
    """Drops pydantic's auto-generated "title" keys (noise in a prompt), keeping properties."""
    if isinstance(schema, list):
        return [_strip_titles(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _strip_titles(sub) for name, sub in value.items()}
        else:
            out[key] = _strip_titles(value)
    return out


def _loc(error: dict[str, Any]) -> str:
    return ".".join(str(p) for p in error.get("loc", ())) or "arguments"


def validation_error(tool: Tool, exc: pydantic.ValidationError) -> ToolError:
    """Maps pydantic errors to one ToolError: unknown > missing > invalid, every problem named."""
    unknown, missing, invalid = [], [], []
    for err in exc.errors(include_url=False):
        loc = _loc(err)
        if err["type"] == "extra_forbidden":
            unknown.append(loc)
        elif err["type"] == "missing":
            missing.append(loc)
        else:
            invalid.append(f"argument '{loc}': {err['msg']}")
    expected = ", ".join(tool.Arguments.model_fields) or "none"
    parts = []
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        parts.append(f"unknown argument(s) {names} for tool '{tool.name}' "
                     f"(its arguments: {expected})")
    if missing:
        names = ", ".join(repr(m) for m in missing)
        parts.append(f"missing required argument(s) {names} for tool '{tool.name}'")
    parts.extend(invalid)
    code = UNKNOWN_ARGUMENT if unknown else MISSING_ARGUMENT if missing else INVALID_ARGUMENT
    return ToolError(code, "; ".join(parts))


class ToolRegistry:
    """Tools by name, in registration order."""

    def __init__(self, tools: list[Tool] | tuple[Tool, ...] = ()):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool | type[Tool]) -> Tool:
        if isinstance(tool, type):
            tool = tool()
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __iter__(self):
        return iter(self._tools.values())

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolError(UNKNOWN_TOOL, f"unknown tool {name!r}; available tools: "
                            f"{', '.join(self._tools)}") from None

    def schemas(self, *, families: set[str] | None = None,
                names: set[str] | None = None) -> list[dict[str, Any]]:
        return [t.schema() for t in self._tools.values()
                if (families is None or t.family in families)
                and (names is None or t.name in names)]

    def validate(self, name: Any, arguments: Any) -> tuple[Tool, ToolArguments]:
        """The tool and its parsed arguments, or ToolError with a stable code."""
        if not isinstance(name, str):
            raise ToolError(UNKNOWN_TOOL, f"tool name must be a string, got {type(name).__name__}")
        tool = self.get(name)
        if not isinstance(arguments, dict):
            raise ToolError(INVALID_ARGUMENT, f"arguments of '{name}' must be a JSON object")
        try:
            return tool, tool.Arguments.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise validation_error(tool, exc) from None
