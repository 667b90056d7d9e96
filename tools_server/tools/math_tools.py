"""Math tools: exact arithmetic with sympy; descriptive statistics in rational arithmetic.

The calculator never hands the expression to Python's `eval` (nor to sympy's `parse_expr`,
which `eval`s generated code): it parses it with `ast`, accepts only numbers, + - * / % // **
(and ^ as power), parentheses, and calls of a fixed set of math functions and constants,
builds the sympy expression itself, and evaluates it bottom-up with size guards, so that
inputs like 9**9**9 are refused instead of holding a worker (and the GIL) for hours. The
server's per-call deadline remains the last line of defence.
"""

from __future__ import annotations

import ast
import collections
import math
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Annotated, Any, Callable

import sympy
from pydantic import Field

from tools_server.registry import (INVALID_ARGUMENT, Tool, ToolArguments, ToolContext, ToolError,
                                   ToolOutput)

MAX_EXPRESSION_CHARS = 200
MAX_BITS = 10_000  # largest size (bits of numerator / denominator) an intermediate may reach
MAX_FACTORIAL = 1000
MAX_INT_DIGITS = 30  # longer integers are shown in scientific notation
SIGNIFICANT_DIGITS = 6


def _degrees(x):
    return x * 180 / sympy.pi


def _radians(x):
    return x * sympy.pi / 180


def _log(x, base=None):
    return sympy.log(x) if base is None else sympy.log(x, base)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": sympy.sqrt, "cbrt": lambda x: sympy.real_root(x, 3), "exp": sympy.exp,
    "log": _log, "ln": sympy.log,
    "log10": lambda x: sympy.log(x, 10), "log2": lambda x: sympy.log(x, 2),
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan,
    "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan, "atan2": sympy.atan2,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh,
    "abs": sympy.Abs, "floor": sympy.floor, "ceil": sympy.ceiling, "ceiling": sympy.ceiling,
    "factorial": sympy.factorial, "binomial": sympy.binomial, "gcd": sympy.gcd, "lcm": sympy.lcm,
    "min": sympy.Min, "max": sympy.Max, "degrees": _degrees, "radians": _radians,
}
CONSTANTS: dict[str, Any] = {"pi": sympy.pi, "e": sympy.E, "E": sympy.E}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.Mod: lambda a, b: sympy.Mod(a, b),
    ast.FloorDiv: lambda a, b: sympy.floor(a / b),
    ast.Pow: None,  # guarded, see _power
}


def _bits(value: Any) -> float:
    """The bits a number's size (or smallness) takes, ~|log2 |value||; exact for rationals."""
    if isinstance(value, sympy.Rational):
        p, q = abs(int(value.p)), int(value.q)
        return max(math.log2(p) if p else 0.0, math.log2(q))
    if not value.is_number:
        return 0.0
    number = sympy.N(abs(value), 15)
    if number.is_zero or not number.is_finite:
        return 0.0  # zoo / nan are refused once the whole expression is built
    return abs(float(sympy.log(number, 2)))


def _too_large(what: str) -> ToolError:
    return ToolError(INVALID_ARGUMENT, f"argument 'expression': {what} is too large (more than "
                     f"{MAX_BITS} bits); the calculator refuses numbers this large")


def _check_size(value: Any) -> Any:
    """Every intermediate stays within 2**±MAX_BITS, so no later step can run away."""
    if _bits(value) > MAX_BITS:
        raise _too_large("an intermediate result")
    return value


def _power(base: Any, exponent: Any) -> Any:
    if base.is_number and exponent.is_number and not (base.is_zero or abs(base) == 1):
        if _bits(exponent) > 64:
            raise _too_large("a power")
        exp_size = abs(float(sympy.N(exponent, 15))) if exponent.is_real else 0.0
        if exp_size * max(_bits(base), 1.0) > MAX_BITS:
            raise _too_large("a power")
    return _check_size(sympy.Pow(base, exponent))


class _Builder:
    """Builds a sympy value from a validated `ast` expression, evaluating bottom-up."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, node: ast.AST, what: str) -> ToolError:
        return ToolError(INVALID_ARGUMENT, f"argument 'expression': {what} is not allowed "
                         f"(allowed: numbers, + - * / % // ** ^, parentheses, "
                         f"{', '.join(FUNCTIONS)}, {', '.join(CONSTANTS)})")

    def build(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise self.fail(node, f"the literal {node.value!r}")
            literal = ast.get_source_segment(self.source, node) or repr(node.value)
            literal = literal.replace("_", "")
            if isinstance(node.value, int):
                if len(literal) > 400:
                    raise self.fail(node, "an integer literal this long")
                return sympy.Integer(node.value)
            mantissa, _, exponent = literal.lower().partition("e")
            if exponent and abs(int(exponent)) > 1000:
                raise self.fail(node, f"the exponent of {literal}")
            return _check_size(sympy.Rational(literal))  # decimals exactly: 0.1 + 0.2 == 3/10
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise self.fail(node, f"the function name {node.id!r} without a call")
            raise self.fail(node, f"the name {node.id!r}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            value = self.build(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.build(node.left), self.build(node.right)
            if isinstance(node.op, ast.Pow):
                return _power(left, right)
            return _check_size(_BINOPS[type(node.op)](left, right))
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                named = isinstance(node.func, ast.Name)
                raise self.fail(node, f"calling {node.func.id!r}" if named else "this call")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise self.fail(node, "keyword or starred arguments")
            name = node.func.id
            args = [self.build(a) for a in node.args]
            if name in ("factorial", "binomial") and args and args[0].is_number \
                    and abs(float(sympy.N(args[0], 15))) > MAX_FACTORIAL:
                raise ToolError(INVALID_ARGUMENT,
                                f"argument 'expression': {name} of a number above "
                                f"{MAX_FACTORIAL} is refused")
            try:
                return _check_size(FUNCTIONS[name](*args))
            except TypeError:
                raise ToolError(INVALID_ARGUMENT, f"argument 'expression': wrong number of "
                                f"arguments for {name}()") from None
        if isinstance(node, ast.Attribute):
            raise self.fail(node, "attribute access")
        raise self.fail(node, f"the syntax {type(node).__name__}")


def _format_significant(x: Decimal) -> str:
    if x.is_zero():
        return "0"
    if Decimal("1e-6") <= abs(x) < Decimal("1e15"):
        rounded = x.quantize(Decimal(1).scaleb(x.adjusted() - SIGNIFICANT_DIGITS + 1),
                             rounding=ROUND_HALF_UP)
        text = format(rounded, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    mantissa, exponent = f"{x:.{SIGNIFICANT_DIGITS - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def evaluate_expression(expression: str) -> tuple[str, float | None, str]:
    """(text shown to the policy, float value or None when out of float range, exact form)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(INVALID_ARGUMENT, f"argument 'expression': {len(expression)} characters; "
                        f"at most {MAX_EXPRESSION_CHARS} are allowed")
    # '^' is power, right-associative as in maths (sympy's convert_xor does the same).
    source = expression.strip().replace("^", "**")
    if not source:
        raise ToolError(INVALID_ARGUMENT, "argument 'expression': empty expression")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise ToolError(INVALID_ARGUMENT, f"argument 'expression': cannot parse {expression!r} "
                        f"({type(exc).__name__})") from None
    try:
        value = _Builder(source).build(tree)
    except ZeroDivisionError:
        raise ToolError(INVALID_ARGUMENT, "argument 'expression': division by zero") from None
    except RecursionError:
        raise ToolError(INVALID_ARGUMENT, "argument 'expression': nested too deeply") from None
    except (ArithmeticError, ValueError, TypeError) as exc:  # sympy / mpmath refusing a value
        raise ToolError(INVALID_ARGUMENT, f"argument 'expression': cannot evaluate "
                        f"({type(exc).__name__}: {exc})") from None
    value = sympy.sympify(value)
    if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise ToolError(INVALID_ARGUMENT,
                        f"argument 'expression': the result is not a finite number ({value})")
    exact = str(value)[:200]
    if isinstance(value, sympy.Integer):
        number = int(value)
        digits = len(str(abs(number)))
        text = str(number) if digits <= MAX_INT_DIGITS else _format_significant(Decimal(number))
        try:
            return text, float(number), exact
        except OverflowError:
            return text, None, exact
    numeric = sympy.N(value, 30)
    if not numeric.is_number or not numeric.is_real:
        raise ToolError(INVALID_ARGUMENT,
                        f"argument 'expression': the result {value} is not a real number")
    decimal = Decimal(str(sympy.Float(numeric, 30)))
    text = _format_significant(decimal)
    as_float = float(decimal)
    representable = math.isfinite(as_float) and (as_float != 0 or decimal.is_zero())
    return text, (as_float if representable else None), exact


class Calculator(Tool):
    """Evaluates an arithmetic expression exactly (sympy) and returns its value.

    Supports numbers, + - * / % // and ** (or ^) for powers, parentheses, the constants
    pi and e, and the functions sqrt, cbrt, exp, log (natural; log(x, base)), ln, log10,
    log2, sin, cos, tan (radians), asin, acos, atan, atan2, sinh, cosh, tanh, abs, floor,
    ceil, factorial, binomial, gcd, lcm, min, max, degrees, radians. No variables.
    Integers are printed exactly; other values rounded to 6 significant digits.
    """

    name = "calculator"
    family = "math"

    class Arguments(ToolArguments):
        expression: Annotated[str, Field(
            min_length=1, max_length=MAX_EXPRESSION_CHARS,
            description="the expression, e.g. (41 - 23) / 4 or sqrt(2)^2")]

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        text, value, exact = evaluate_expression(args.expression)
        return ToolOutput(text, [], {"value": value, "exact": exact})


MAX_STATISTICS_VALUES = 1000


def _decimal(x: Fraction) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 30
        return Decimal(x.numerator) / Decimal(x.denominator)


def _show(x: Decimal | Fraction) -> str:
    """A number as the calculator shows it: integers exactly (up to MAX_INT_DIGITS digits),
    else 6 significant digits."""
    if isinstance(x, Fraction) and x.denominator == 1 and len(str(abs(x.numerator))) <= MAX_INT_DIGITS:
        return str(x.numerator)
    return _format_significant(_decimal(x) if isinstance(x, Fraction) else x)


def _float(x: Decimal | Fraction) -> float | None:
    try:
        value = float(x)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


class Statistics(Tool):
    """Descriptive statistics of a list of numbers, computed exactly (rational arithmetic).

    Returns count, sum, mean, median, mode(s), min, max, range, and the population and
    sample variance and standard deviation (sample ones need at least 2 values). Use it
    for averages, totals and spreads of values read off a chart or table. Integers are
    printed exactly; other values rounded to 6 significant digits.
    """

    name = "statistics"
    family = "math"

    class Arguments(ToolArguments):
        values: Annotated[list[float], Field(
            min_length=1, max_length=MAX_STATISTICS_VALUES,
            description="the numbers, e.g. [12, 7.5, 30]")]

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        if not all(math.isfinite(v) for v in args.values):
            raise ToolError(INVALID_ARGUMENT, "argument 'values': every value must be finite")
        # repr(0.1) == "0.1": each value is read as written, not as its binary approximation.
        xs = sorted(Fraction(Decimal(repr(v))) for v in args.values)
        n = len(xs)
        total = sum(xs, Fraction(0))
        mean = total / n
        counts = collections.Counter(xs)
        top = max(counts.values())
        ss = sum(((x - mean) ** 2 for x in xs), Fraction(0))
        stats: dict[str, Decimal | Fraction] = {
            "count": Fraction(n), "sum": total, "mean": mean,
            "median": xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2,
            "min": xs[0], "max": xs[-1], "range": xs[-1] - xs[0],
            "variance": ss / n, "std": _decimal(ss / n).sqrt()}
        if n > 1:
            stats["sample_variance"] = ss / (n - 1)
            stats["sample_std"] = _decimal(ss / (n - 1)).sqrt()
        modes = sorted(x for x, c in counts.items() if c == top) if top > 1 else []
        lines = [f"{k}: {_show(v)}" for k, v in stats.items()]
        lines.insert(4, "modes: " + ("[" + ", ".join(map(_show, modes)) + "]" if modes else "none"))
        data: dict = {k: _float(v) for k, v in stats.items()}
        data["count"] = n
        data["modes"] = [_float(m) for m in modes]
        return ToolOutput("\n".join(lines), [], data)
