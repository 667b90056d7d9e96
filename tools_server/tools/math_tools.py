"""Math tools: exact arithmetic, equations, simplification and plane geometry with sympy;
descriptive statistics in rational arithmetic.

The calculator never hands the expression to Python's `eval` (nor to sympy's `parse_expr`,
which `eval`s generated code): it parses it with `ast`, accepts only numbers, + - * / % // **
(and ^ as power), parentheses, and calls of a fixed set of math functions and constants,
builds the sympy expression itself, and evaluates it bottom-up with size guards, so that
inputs like 9**9**9 are refused instead of holding a worker (and the GIL) for hours.
solve_equation and simplify use the same parser with variables allowed (`build_expression`);
there pi, e and E are always constants (a note says so when e stands beside variables, as
in a+b+c+d+e, where the policy may have meant a variable).

sympy multiplies out powers of sums in single Python loops that nothing can interrupt:
(a+b+c+d+e+f)^100 has 96,560,646 terms, and expanding it ran a minute into a MemoryError.
So the parser bounds, without expanding, every part of an expression as it builds it
(`_growth`: at most MAX_EXPANDED_TERMS terms and degree MAX_EXPANDED_DEGREE once multiplied
out) and refuses larger ones at once, naming the argument. Within those bounds sympy can
still run long (exact square roots of 9000-bit integers, multivariate factoring), so the
calculator, solve_equation, simplify and geometry_solver run under `time_limit` (2 s by
default, the `time_limit_s` constructor option): a trace function on the worker thread
stops sympy at its next Python call once the time is up, and the call fails with a
`timeout` error. Measured on inputs at the bounds, symbolic calls so stopped ended within
10 ms of the limit, using under 120 MB; the calculator's exact roots of 9000-bit integers
(primality tests in C) up to 0.7 s after it on an idle host, about 2 s after it on a busy
2-core one (CI). The server's per-call deadline remains the
last line of defence.

geometry_solver reads a figure in the language of `tools_server.tools.formal`; it computes
from given coordinates exactly, and places points without coordinates one at a time from the
facts (each fact about one unplaced point is a circle or a line: intersections are found in
closed form), falling back to sympy.solve for facts that stay coupled. Its equations need no
expansion bound: each fact is a polynomial of degree 2 at most in the unknown coordinates,
and exact coordinates that grow past MAX_EXACT_OPS are replaced by 50-digit decimals.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import inspect
import itertools
import math
import re
import sys
import time
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Annotated, Any, Callable, Literal, NamedTuple, Union

import sympy
from pydantic import Discriminator, Field, Tag

from tools_server.registry import (EXECUTION_FAILED, INVALID_ARGUMENT, TIMEOUT, Tool, ToolArguments,
                                   ToolContext, ToolError, ToolOutput)
from tools_server.tools import formal

MAX_EXPRESSION_CHARS = 200
MAX_SYMBOLIC_EXPONENT = 100  # largest power of an expression with variables, e.g. (x+1)**100
VARIABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,19}$")
MAX_BITS = 10_000  # largest size (bits of numerator / denominator) an intermediate may reach
MAX_FACTORIAL = 1000
MAX_INT_DIGITS = 30  # longer integers are shown in scientific notation
SIGNIFICANT_DIGITS = 6
CANCELLATION_DIGITS = 1000  # working precision the calculator may use for nearly equal terms
DEFAULT_TIME_LIMIT_S = 2.0  # per call of the sympy tools (the `time_limit_s` option)


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


class _Refused(Exception):
    """An expression the parser refuses; the caller names the argument it came from."""


def _too_large(what: str) -> _Refused:
    return _Refused(f"{what} is too large (more than {MAX_BITS} bits); the calculator "
                    "refuses numbers this large")


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
    if not base.is_number and exponent.is_number and (
            not exponent.is_real or abs(float(sympy.N(exponent, 15))) > MAX_SYMBOLIC_EXPONENT):
        raise _Refused(f"a power of a variable with exponent {exponent} is too large (at most "
                       f"{MAX_SYMBOLIC_EXPONENT})")
    return _check_size(sympy.Pow(base, exponent))


# Bounds on what an expression may become once multiplied out. sympy's expand (and the
# simplify, factor, solve and Poly that call it) multiplies out powers of sums in one Python
# loop that neither a time limit nor memory can stop: (a+b+c+d+e+f)^100 has 96,560,646
# terms and ran out of 2 GB after a minute. 10,000 terms and degree 1000 leave school
# algebra untouched ((x+y+z+1)^20 has 1771 terms) while anything inside them multiplies
# out in about 2 s at most.
MAX_EXPANDED_TERMS = 10_000
MAX_EXPANDED_DEGREE = 1000


class _Growth(NamedTuple):
    """Upper bounds for an expression put over a common denominator and multiplied out."""
    num_terms: int
    den_terms: int
    num_degree: int  # total degree in the variables (a function of a variable counts 1)
    den_degree: int
    rational_poly: bool  # a polynomial with rational coefficients: its terms are monomials


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _multiset(terms: int, k: int) -> int:
    """Terms of a t-term sum raised to the k-th power, multiplied out: C(t + k - 1, k)."""
    return math.comb(terms + k - 1, min(k, terms - 1)) if terms > 1 else 1


def _growth(value: Any, memo: dict[Any, _Growth]) -> _Growth:
    """Bounds (without expanding) how large `value` and each part of it get once sympy
    multiplies them out; _Refused as soon as a part would exceed MAX_EXPANDED_TERMS terms
    or degree MAX_EXPANDED_DEGREE. Sums add terms, products multiply them, a sum of t terms
    to the k-th power has C(t + k - 1, k); denominators are bounded like numerators (a sum
    of fractions over a common denominator multiplies them). Function arguments and
    exponents are bounded on their own, the function counting as one term."""
    if value in memo:
        return memo[value]
    parts = [_growth(a, memo) for a in value.args]
    variable = int(bool(value.free_symbols))
    if value.is_Symbol:
        g = _Growth(1, 1, 1, 0, True)
    elif value.is_Atom:  # numbers, pi, E, I
        g = _Growth(1, 1, 0, 0, value.is_Rational is True)
    elif value.is_Add:
        den_degree = sum(p.den_degree for p in parts)
        g = _Growth(sum(p.num_terms * math.prod(q.den_terms for j, q in enumerate(parts) if j != i)
                        for i, p in enumerate(parts)),
                    math.prod(p.den_terms for p in parts),
                    max(p.num_degree + den_degree - p.den_degree for p in parts), den_degree,
                    all(p.rational_poly for p in parts))
    elif value.is_Mul:
        g = _Growth(math.prod(p.num_terms for p in parts), math.prod(p.den_terms for p in parts),
                    sum(p.num_degree for p in parts), sum(p.den_degree for p in parts),
                    all(p.rational_poly for p in parts))
    elif value.is_Pow:
        base, exp = parts[0], value.exp
        if exp.is_Rational:
            # x^(7/2) = x^3 sqrt(x) multiplies out the cube (Poly takes sqrt(x) as its
            # generator: degree 7); x^-2 is 1 / (x^2 multiplied out)
            k, scale, extra = int(abs(exp)), abs(int(exp.p)), 0
        else:
            # (a+b)^(n+2) expands to (a+b)^n (a+b)^2: the exponent's numeric part multiplies
            constant = exp.as_coeff_Add()[0]
            k = int(abs(constant)) if constant.is_Rational else 0
            scale, extra = k, variable
        num_degree, den_degree = scale * base.num_degree + extra, scale * base.den_degree
        _check_degree_bound(value, max(num_degree, den_degree))  # before C(t + k - 1, k)
        g = _Growth(_multiset(base.num_terms, k), _multiset(base.den_terms, k),
                    num_degree, den_degree,
                    base.rational_poly and exp.is_Integer and exp > 0)
        if exp.is_Rational and exp < 0:
            g = _Growth(g.den_terms, g.num_terms, g.den_degree, g.num_degree, False)
    else:  # sin(x), exp(x), Abs, floor, Mod, Min...: one term, of degree 1 in a variable
        g = _Growth(1, 1, variable, 0, False)
    if g.rational_poly:  # no more terms than monomials of its degree in its variables
        g = g._replace(num_terms=min(g.num_terms, math.comb(
            len(value.free_symbols) + g.num_degree, g.num_degree)))
    _check_degree_bound(value, max(g.num_degree, g.den_degree))
    terms = max(g.num_terms, g.den_terms)
    if terms > MAX_EXPANDED_TERMS:
        raise _Refused(f"{_short(value)} would have {_count_text(terms)} terms once "
                       f"multiplied out (at most {MAX_EXPANDED_TERMS:,} are allowed)")
    memo[value] = g
    return g


def _check_degree_bound(value: Any, degree: int) -> None:
    if degree > MAX_EXPANDED_DEGREE:
        raise _Refused(f"{_short(value)} has degree {degree} once multiplied out (at most "
                       f"{MAX_EXPANDED_DEGREE} is allowed)")


def _count_text(n: int) -> str:
    return f"{n:,}" if n < 10 ** 15 else f"about 10^{len(str(n)) - 1}"


def check_expansion(value: Any, argument: str) -> None:
    """ToolError(INVALID_ARGUMENT) naming `argument` when `value`, or a part of it, would
    be too large to multiply out (see _growth); cheap: it never expands anything."""
    try:
        _growth(value, {})
    except _Refused as exc:
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': {exc}") from None


class _Builder:
    """Builds a sympy value from a validated `ast` expression, evaluating bottom-up."""

    def __init__(self, source: str, variables: bool = False):
        self.source = source
        self.variables = variables  # whether other names are variables (sympy symbols)
        self.names: set[str] = set()  # the variables met
        self.constants: set[str] = set()  # the constants' names met (pi, e, E), but e^x
        # every part is bounded as it is built: sympy multiplies out some arguments on the
        # spot (gcd, lcm, %, //, floor of a sum's power), before any time limit applies
        self.growth: dict[Any, _Growth] = {}

    def build(self, node: ast.AST) -> Any:
        value = self._build(node)
        _growth(sympy.sympify(value), self.growth)
        return value

    def fail(self, node: ast.AST, what: str) -> _Refused:
        names = "variable names, " if self.variables else ""
        return _Refused(f"{what} is not allowed (allowed: numbers, {names}+ - * / % // ** ^, "
                        f"parentheses, {', '.join(FUNCTIONS)}, {', '.join(CONSTANTS)})")

    def _build(self, node: ast.AST) -> Any:
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
                self.constants.add(node.id)
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise self.fail(node, f"the function name {node.id!r} without a call")
            if self.variables and VARIABLE_RE.match(node.id):
                self.names.add(node.id)
                return sympy.Symbol(node.id)
            raise self.fail(node, f"the name {node.id!r}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            value = self.build(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            if isinstance(node.op, ast.Pow) and isinstance(node.left, ast.Name) \
                    and node.left.id in ("e", "E"):
                left = sympy.E  # e^x: plainly Euler's number, not worth a note
            else:
                left = self.build(node.left)
            right = self.build(node.right)
            if isinstance(node.op, ast.Pow):
                return _power(left, right)
            return _check_size(_BINOPS[type(node.op)](left, right))
        if isinstance(node, ast.Call):
            if (self.variables and isinstance(node.func, ast.Name) and len(node.args) == 1
                    and not node.keywords and node.func.id not in FUNCTIONS
                    and node.func.id not in CONSTANTS and VARIABLE_RE.match(node.func.id)):
                # x(x + 1) is a product when x is a variable
                self.names.add(node.func.id)
                return _check_size(sympy.Symbol(node.func.id) * self.build(node.args[0]))
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                named = isinstance(node.func, ast.Name)
                raise self.fail(node, f"calling {node.func.id!r}" if named else "this call")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise self.fail(node, "keyword or starred arguments")
            name = node.func.id
            args = [self.build(a) for a in node.args]
            if name in ("gcd", "lcm") and not self.variables \
                    and not all(isinstance(a, sympy.Rational) for a in args):
                # of irrational numbers they mean nothing, and sympy spends seconds on them
                raise _Refused(f"{name}() takes whole numbers or fractions")
            if name in ("factorial", "binomial") and args and args[0].is_number \
                    and abs(float(sympy.N(args[0], 15))) > MAX_FACTORIAL:
                raise _Refused(f"{name} of a number above {MAX_FACTORIAL} is refused")
            try:
                return _check_size(FUNCTIONS[name](*args))
            except TypeError:
                raise _Refused(f"wrong number of arguments for {name}()") from None
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


# Implicit products the symbolic tools accept: 2x, 3(x+1), (x+1)(x-1), (x+1)y. A digit that
# ends a name (log10, x2) or starts an exponent (1e5) is not a factor.
_IMPLICIT_NUMBER = re.compile(r"(?<![A-Za-z_\d.])(\d+(?:\.\d*)?)\s*(?![eE][+-]?\d)(?=[A-Za-z_(])")
_IMPLICIT_PAREN = re.compile(r"\)\s*(?=[A-Za-z_\d(])")


def build_expression(expression: str, *, argument: str = "expression",
                     variables: bool = False, names: set[str] | None = None,
                     constants: set[str] | None = None) -> Any:
    """The sympy value of a safe expression; ToolError naming `argument` if refused.

    With `variables`, other names (a letter, then letters, digits or _) are sympy symbols
    and implicit products (2x, 3(x+1), (x+1)(x-1)) are accepted; `names` (if given)
    collects them, including those that cancel out (x - x); `constants` (if given) the
    constants' names used (pi, e, E). Any part that would multiply out to more than
    MAX_EXPANDED_TERMS terms or degree MAX_EXPANDED_DEGREE is refused (see _growth).
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': {len(expression)} "
                        f"characters; at most {MAX_EXPRESSION_CHARS} are allowed")
    # '^' is power, right-associative as in maths (sympy's convert_xor does the same).
    source = expression.strip().replace("^", "**")
    if variables:
        source = _IMPLICIT_PAREN.sub(")*", _IMPLICIT_NUMBER.sub(r"\1*", source))
    if not source:
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': empty expression")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': cannot parse {expression!r} "
                        f"({type(exc).__name__})") from None
    try:
        builder = _Builder(source, variables)
        value = builder.build(tree)
        if names is not None:
            names.update(builder.names)
        if constants is not None:
            constants.update(builder.constants)
    except _Refused as exc:
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': {exc}") from None
    except ZeroDivisionError:
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': division by zero") from None
    except RecursionError:
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': nested too deeply") from None
    except (ArithmeticError, ValueError, TypeError) as exc:  # sympy / mpmath refusing a value
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': cannot evaluate "
                        f"({type(exc).__name__}: {exc})") from None
    return sympy.sympify(value)


def evaluate_expression(expression: str) -> tuple[str, float | None, str]:
    """(text shown to the policy, float value or None when out of float range, exact form)."""
    value = build_expression(expression)
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
    try:
        # strict: a difference of nearly equal terms must not come back as rounding noise
        # (sin(1)^2 + cos(1)^2 - 1 read -1.08533e-165); up to 1000 digits are tried
        numeric = sympy.N(value, 30, strict=True, maxn=CANCELLATION_DIGITS)
    except sympy.core.evalf.PrecisionExhausted:
        bound = sympy.N(value, 30, maxn=CANCELLATION_DIGITS)  # 0.e-118: |value| < 1e-118
        exponent = Decimal(str(bound)).adjusted() if bound.is_Float else 0
        if exponent >= -100:
            raise ToolError(INVALID_ARGUMENT, "argument 'expression': its terms cancel beyond "
                            f"{CANCELLATION_DIGITS} digits; its value cannot be computed") from None
        return f"≈ 0 (below 1e{exponent + 1}; it may be exactly 0)", 0.0, exact
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
    ceil, factorial, binomial, gcd, lcm (of whole numbers or fractions), min, max,
    degrees, radians. No variables. Integers are printed exactly; other values rounded to
    6 significant digits; a difference whose terms cancel beyond 1000 digits reads
    "≈ 0 (below 1e-N; it may be exactly 0)". Numbers above 2^10000 and sums that would
    multiply out to more than 10,000 terms are refused; an evaluation still running
    after 2 s is stopped with a timeout error (it may overrun by a fraction of a second).
    """

    name = "calculator"
    family = "math"

    class Arguments(ToolArguments):
        expression: Annotated[str, Field(
            min_length=1, max_length=MAX_EXPRESSION_CHARS,
            description="the expression, e.g. (41 - 23) / 4 or sqrt(2)^2")]

    def __init__(self, time_limit_s: float = DEFAULT_TIME_LIMIT_S):
        self.time_limit_s = time_limit_s

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        # the size guards bound every value, but floor or % of a huge irrational power
        # still takes sympy seconds of exact work: (1+sqrt(2))^7000 % 3
        with time_limit(self.time_limit_s, "evaluating"), sympy_failures("evaluating"):
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


# ------------------------------------------------------------------ symbolic tools

MAX_EQUATIONS = 10
MAX_VARIABLES = 6
MAX_DEGREE = 12  # total degree of a polynomial equation solve_equation accepts
MAX_SOLUTIONS = 20
MAX_RESULT_CHARS = 2000


_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class _OutOfTime(BaseException):
    """Raised inside sympy by the time-limit tracer. A BaseException, so that sympy's own
    `except Exception` clauses cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Runs the body with a deadline; ToolError(timeout) once it has passed.

    sympy cannot be interrupted and a thread cannot be killed, so the check runs inside:
    a trace function on this thread only, called at each Python function call (not each
    line), raises once the deadline has passed. It roughly doubles sympy's run time; loops
    that call no Python function (big-integer arithmetic in C, sympy's multinomial
    expansion) are not interrupted, which the parser's size and expansion bounds
    (_check_size, _growth) keep short. The previous trace function is restored.
    """
    deadline = time.monotonic() + seconds
    previous = sys.gettrace()
    calls = 0

    def tracer(frame, event, arg):
        nonlocal calls
        calls += 1
        # Not inside a generator: one being finalised swallows the exception, and a trace
        # function that raises is removed, so the deadline would be lost.
        if calls & 63 == 0 and time.monotonic() > deadline \
                and not frame.f_code.co_flags & _GENERATOR_FLAGS:
            raise _OutOfTime
        return None  # no per-line tracing

    timed_out = ToolError(TIMEOUT, f"{what} took longer than {seconds:g} s and was stopped; "
                          "try a simpler input (fewer variables, lower degree)")
    sys.settrace(tracer)
    try:
        yield
    except _OutOfTime:
        raise timed_out from None
    finally:
        sys.settrace(previous)
    if time.monotonic() > deadline + seconds:  # the stop was swallowed after all
        raise timed_out


@contextlib.contextmanager
def sympy_failures(what: str):
    """sympy raises many kinds of errors on inputs it cannot handle (PolynomialError,
    NotImplementedError, TypeError deep inside...): report them as a failed computation."""
    try:
        yield
    except ToolError:
        raise
    except RecursionError:
        raise ToolError(EXECUTION_FAILED, f"{what}: the input is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any sympy failure is this call's result
        raise ToolError(EXECUTION_FAILED, f"{what}: sympy cannot handle this input "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None


def _decimal_text(value: Any) -> tuple[str | None, float | None]:
    """(6-significant-digit text, float) of a number; (None, None) if it is not a number."""
    if not value.is_number:
        return None, None
    numeric = sympy.N(value, 30)
    re_part, im_part = numeric.as_real_imag()
    if not (re_part.is_number and im_part.is_number) or numeric.has(sympy.nan, sympy.zoo):
        return None, None
    re_dec = Decimal(str(sympy.Float(re_part, 30)))
    if abs(im_part) > Decimal("1e-25") * max(1, abs(re_dec)):
        im_dec = Decimal(str(sympy.Float(im_part, 30)))
        im_text = _format_significant(abs(im_dec))
        im_text = "I" if im_text == "1" else f"{im_text}*I"
        if re_dec.is_zero():
            return ("-" if im_dec < 0 else "") + im_text, None
        return f"{_format_significant(re_dec)} {'-' if im_dec < 0 else '+'} {im_text}", None
    as_float = float(re_dec)
    return _format_significant(re_dec), (as_float if math.isfinite(as_float) else None)


def _exact_text(value: Any) -> str:
    text = str(value)
    if len(text) > MAX_RESULT_CHARS:
        raise ToolError(EXECUTION_FAILED, f"the result is {len(text)} characters long (limit "
                        f"{MAX_RESULT_CHARS}); try a simpler input")
    return text


def _show_value(value: Any) -> tuple[str, dict[str, Any]]:
    """'exact ≈ decimal' (just 'exact' for integers) and its data entry."""
    exact = _exact_text(value)
    decimal, as_float = _decimal_text(value)
    text = exact if decimal is None or decimal == exact else f"{exact} ≈ {decimal}"
    return text, {"exact": exact, "value": as_float}


_COMPARISONS = ("<=", ">=", "!=", "<", ">")


def _equation(text: str, argument: str, names: set[str], constants: set[str]) -> Any:
    """'lhs = rhs' (or '==', or an expression meaning expression = 0) as lhs - rhs; adds
    the variables and constants it names to `names` and `constants`."""
    for op in _COMPARISONS:
        if op in text:
            raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': {op!r} found; only "
                            "equations are solved, not inequalities")
    sides = text.replace("==", "=").split("=")
    if len(sides) > 2:
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': more than one '=' in "
                        f"{text!r}; give each equation separately")
    lhs = build_expression(sides[0], argument=argument, variables=True, names=names,
                           constants=constants)
    rhs = sympy.Integer(0) if len(sides) == 1 else build_expression(
        sides[1], argument=argument, variables=True, names=names, constants=constants)
    value = lhs - rhs
    check_expansion(value, argument)
    if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': {text!r} is not finite")
    return value


def _check_degree(exprs: list[Any], variables: list[Any], arguments: list[str]) -> None:
    for expr, argument in zip(exprs, arguments):
        numerator = sympy.fraction(sympy.together(expr))[0]
        if numerator.is_polynomial(*variables):
            degree = sympy.Poly(numerator, *variables).total_degree()
            if degree > MAX_DEGREE:
                raise ToolError(INVALID_ARGUMENT, f"argument '{argument}': a polynomial "
                                f"equation of degree {degree}; at most {MAX_DEGREE} is solved")


def _integer_family(s: Any) -> str | None:
    """'expr for every integer n' for sympy's ImageSet(Lambda(n, expr), Integers) (and
    unions of them); None for any other set."""
    parts = s.args if isinstance(s, sympy.Union) else (s,)
    texts = []
    for part in parts:
        if not (isinstance(part, sympy.ImageSet) and part.base_sets == (sympy.S.Integers,)):
            return None
        (n,) = part.lamda.variables
        texts.append(str(part.lamda.expr.subs(n, sympy.Symbol("n"))))
    return " or ".join(texts) + " (for every integer n)"


def _solve(exprs: list[Any], variables: list[Any], domain: str) -> dict[str, Any]:
    """The solutions of exprs = 0 for `variables`: {"status": finite | none | infinite |
    unsolved, "solutions": [{name: value}], "general": text}."""
    params = set().union(*(e.free_symbols for e in exprs)) - set(variables)
    dom = sympy.S.Reals if domain == "real" else sympy.S.Complexes
    if len(exprs) == 1 and len(variables) == 1 and not params:
        (x,) = variables
        found = sympy.solveset(exprs[0], x, dom)
        if found is sympy.S.EmptySet:
            return {"status": "none"}
        if isinstance(found, sympy.FiniteSet):
            return {"status": "finite", "solutions": [{x: v} for v in sorted(
                found, key=lambda v: sympy.default_sort_key(v))]}
        family = _integer_family(found)
        if family is not None:
            return {"status": "infinite", "general": f"{x} = {family}"}
        if isinstance(found, (sympy.Interval, sympy.Union, sympy.Complement)) \
                or found in (sympy.S.Reals, sympy.S.Complexes):
            where = {sympy.S.Reals: "any real number",
                     sympy.S.Complexes: "any complex number"}.get(found, f"any number in {found}")
            return {"status": "infinite", "general": f"{x} can be {where}"}
        return {"status": "unsolved", "general": str(found)}
    kept = [e for e in exprs if not e.is_zero]
    if any(e.is_number for e in kept):
        return {"status": "none"}  # a nonzero constant = 0
    if not kept:
        return {"status": "infinite", "general": "every value of "
                + ", ".join(map(str, variables)) + " (the equations always hold)"}
    polynomial = all(e.is_polynomial(*variables) for e in kept)
    if polynomial and all(sympy.Poly(e, *variables).total_degree() <= 1 for e in kept):
        found = sympy.linsolve(kept, variables)
        if found is sympy.S.EmptySet:
            return {"status": "none"}
        rows = [dict(zip(variables, values)) for values in found]
    else:
        # Solved over the complex numbers: with real symbols sympy drops roots it cannot
        # show to be real and, with [], says nothing; real ones are picked out afterwards.
        plain = {v: sympy.Symbol(v.name) for v in variables}
        back = {p: v for v, p in plain.items()}
        try:
            found = sympy.solve([e.subs(plain) for e in kept], list(plain.values()), dict=True)
        except NotImplementedError:
            return {"status": "unsolved", "general": "sympy has no method for this system"}
        found = [{back[k]: v.subs(back) for k, v in sol.items()} for sol in found]
        if not found:
            # sympy.solve also returns [] when it cannot write the roots down (a degree-32
            # eliminant, say): only a Groebner basis of {1} proves there is no solution
            if polynomial and _inconsistent(kept, variables):
                return {"status": "none"}
            return {"status": "unsolved", "general": "no closed form found; this does not "
                    "mean there is no solution"}
        rows = [{v: s.get(v, v) for v in variables} for s in found]
    unknowns = set(variables)
    free = sorted({str(v) for row in rows for val in row.values()
                   for v in val.free_symbols & unknowns})
    if not free:
        return {"status": "finite", "solutions": rows}
    general = " or ".join(", ".join(f"{v} = {val}" for v, val in row.items() if val != v)
                          for row in rows)
    return {"status": "infinite", "general": f"{general} ({', '.join(free)} free)"}


def _inconsistent(exprs: list[Any], variables: list[Any]) -> bool:
    """Whether polynomial equations provably have no (complex) solution: their Groebner
    basis is {1}. False when that cannot be shown, or they are not polynomials."""
    if not all(e.is_polynomial(*variables) for e in exprs):
        return False
    numerators = [sympy.fraction(sympy.together(e))[0] for e in exprs]
    try:
        basis = sympy.groebner(numerators, *variables, order="grevlex")
    except (sympy.PolynomialError, NotImplementedError):
        return False
    return list(basis.exprs) == [1]


def _real_solution(solution: dict[Any, Any]) -> bool:
    for value in solution.values():
        if value.is_real is False:
            return False
        if value.is_number:
            im = sympy.im(sympy.N(value, 30))
            if im.is_number and abs(im) > 1e-20:
                return False
    return True


def _name_notes(constants: set[str], names: set[str], results: list[Any]) -> list[str]:
    """Notes on names that read differently from what the policy may mean: e and E are
    always Euler's number (as in the calculator), which matters when other names are
    variables, as in a+b+c+d+e; a variable I prints like sympy's imaginary unit."""
    notes = []
    euler = sorted(c for c in constants if c in ("e", "E"))
    if euler and names:
        notes.append(f"note: {' and '.join(euler)} {'is' if len(euler) == 1 else 'are'} "
                     "Euler's number 2.71828... (printed E), not a variable; rename a "
                     "variable called e (e.g. e1)")
    if "I" in names and any(sympy.sympify(r).has(sympy.I) for r in results):
        notes.append("note: I in the result is the imaginary unit sqrt(-1), and your "
                     "variable I prints the same; rename the variable (e.g. I1) to tell them "
                     "apart")
    return notes


_Equation = Annotated[str, Field(min_length=1, max_length=2 * MAX_EXPRESSION_CHARS + 2)]
Equations = Annotated[
    Union[Annotated[_Equation, Tag("one")],
          Annotated[list[_Equation], Field(min_length=1, max_length=MAX_EQUATIONS), Tag("list")]],
    Discriminator(lambda v: "list" if isinstance(v, list) else "one"),
    Field(description="an equation such as 'x^2 - 5x + 6 = 0', or a list of up to 10 for a "
                      "system, e.g. ['2x + y = 7', 'x - y = -1']")]


class SolveEquation(Tool):
    """Solves an equation or a system of equations exactly (sympy).

    `equations`: one equation or a list of them, e.g. "x^2 - 5x + 6 = 0" or
    ["2x + y = 7", "x - y = -1"]; without '=' an expression means expression = 0. Names
    are variables; ^ or ** is a power; 2x, 3(x+1) and (x+1)(x-1) are products; the
    calculator's functions (sqrt, sin, log, ...) are allowed; pi, e and E are always the
    constants (e = E = 2.71828..., as in e^x; a note says so when e stands beside other
    names, as in a+b+c+d+e: call such a variable e1); I is a variable (the imaginary
    unit prints as I).
    `variables`: the unknowns (default: every name used); other names are parameters.
    `domain`: "real" (default) or "complex". Returns every solution exactly (fractions,
    radicals) with a decimal, or says there is no solution or infinitely many (with the
    general solution). Polynomials up to degree 12, up to 6 unknowns. Equations that would
    multiply out to more than 10,000 terms (e.g. (a+b+c+d+f+g)^12) or degree 1000 are
    refused at once; a solve still running after 2 s is stopped with a timeout error
    (checked between sympy's steps, so it may overrun by a fraction of a second).
    """

    name = "solve_equation"
    family = "math"

    class Arguments(ToolArguments):
        equations: Equations
        variables: Annotated[list[Annotated[str, Field(min_length=1, max_length=20)]] | None,
                             Field(max_length=MAX_VARIABLES,
                                   description="the unknowns to solve for, e.g. ['x', 'y'] "
                                               "(default: every name in the equations)")] = None
        domain: Annotated[Literal["real", "complex"],
                          Field(description="look for real (default) or complex solutions")
                          ] = "real"

    def __init__(self, time_limit_s: float = DEFAULT_TIME_LIMIT_S):
        self.time_limit_s = time_limit_s

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        if isinstance(args.equations, str):
            texts, arguments = [args.equations], ["equations"]
        else:
            texts = args.equations
            arguments = [f"equations[{i}]" for i in range(len(texts))]
        # one deadline from parsing on: sympy already works while parsing (gcd, Mod)
        with time_limit(self.time_limit_s, "solving"), sympy_failures("solving"):
            return self._run(args, texts, arguments)

    def _run(self, args: Arguments, texts: list[str], arguments: list[str]) -> ToolOutput:
        used: set[str] = set()
        constants: set[str] = set()
        exprs = [_equation(t, a, used, constants) for t, a in zip(texts, arguments)]
        names = sorted(used)
        if args.variables is not None:
            if not args.variables or len(set(args.variables)) != len(args.variables):
                raise ToolError(INVALID_ARGUMENT, "argument 'variables': give distinct names")
            for v in args.variables:
                if not VARIABLE_RE.match(v) or v not in names:
                    raise ToolError(INVALID_ARGUMENT, f"argument 'variables': {v!r} does not "
                                    f"appear in the equations (names found: "
                                    f"{', '.join(names) or 'none'})")
            wanted = list(args.variables)
        else:
            wanted = names
        if len(wanted) > MAX_VARIABLES:
            raise ToolError(INVALID_ARGUMENT, f"argument 'variables': {len(wanted)} unknowns "
                            f"({', '.join(wanted)}); at most {MAX_VARIABLES}")
        if not wanted:
            holds = all(sympy.simplify(e) == 0 for e in exprs)
            text = "the equations have no variables; they are " + ("true" if holds else "false")
            return ToolOutput(text, [], {"status": "true" if holds else "false"})
        real = args.domain == "real"
        symbols = {n: sympy.Symbol(n, real=True) if real else sympy.Symbol(n) for n in names}
        exprs = [e.subs({sympy.Symbol(n): s for n, s in symbols.items()}, simultaneous=True)
                 for e in exprs]
        variables = [symbols[n] for n in wanted]
        _check_degree(exprs, variables, arguments)
        result = _solve(exprs, variables, args.domain)
        solutions = result.get("solutions", [])
        if real:
            solutions = [s for s in solutions if _real_solution(s)]
        shown = [[(str(v), *_show_value(s[v])) for v in variables] for s in solutions]
        status = result["status"]
        if status == "finite" and not solutions:
            status = "none"
        where = " real" if real else ""
        if status == "none":
            text = f"no{where} solution"
        elif status == "infinite":
            text = f"infinitely many solutions: {result['general']}"
        elif status == "unsolved":
            text = f"sympy could not solve this in closed form ({result['general'][:200]})"
        else:
            lines = [", ".join(f"{v} = {t}" for v, t, _ in row) for row in shown[:MAX_SOLUTIONS]]
            if len(shown) > MAX_SOLUTIONS:
                lines.append(f"... and {len(shown) - MAX_SOLUTIONS} more")
            text = "\n".join(lines)
        data: dict[str, Any] = {"status": status, "variables": wanted,
                                "solutions": [{v: d for v, _, d in row}
                                              for row in shown[:MAX_SOLUTIONS]]}
        if "general" in result:
            data["general"] = result["general"][:MAX_RESULT_CHARS]
        notes = _name_notes(constants, used, [v for s in solutions for v in s.values()])
        if notes:
            text = "\n".join([text, *notes])
            data["notes"] = notes
        return ToolOutput(text, [], data)


class Simplify(Tool):
    """Simplifies, expands or factors an expression exactly (sympy).

    `expression` may use variables, e.g. "(x^2 - 1)/(x - 1)" or "sqrt(8) + sqrt(18)";
    ^ or ** is a power; 2x and (x+1)(x-1) are products; pi, e and E are always the
    constants (e = E = 2.71828..., as in e^x; a note says so when e stands beside other
    names, as in a+b+c+d+e: call such a variable e1). `mode`: "simplify" (default, the
    simplest form sympy finds), "expand" (multiply out) or "factor" (factor over the
    rationals). Returns the exact result (and a decimal when it is a number). Expressions
    that would multiply out to more than 10,000 terms or degree 1000 are refused at once;
    work still running after 2 s is stopped with a timeout error (checked between sympy's
    steps, so it may overrun by a fraction of a second).
    """

    name = "simplify"
    family = "math"

    class Arguments(ToolArguments):
        expression: Annotated[str, Field(
            min_length=1, max_length=MAX_EXPRESSION_CHARS,
            description="the expression, e.g. (x^2 - 1)/(x - 1)")]
        mode: Annotated[Literal["simplify", "expand", "factor"],
                        Field(description="simplify (default), expand or factor")] = "simplify"

    def __init__(self, time_limit_s: float = DEFAULT_TIME_LIMIT_S):
        self.time_limit_s = time_limit_s

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        if "=" in args.expression:
            raise ToolError(INVALID_ARGUMENT, "argument 'expression': an expression, not an "
                            "equation, is expected (solve_equation solves equations)")
        names: set[str] = set()
        constants: set[str] = set()
        action = {"simplify": sympy.simplify, "expand": sympy.expand, "factor": sympy.factor}
        # one deadline from parsing on: sympy already works while parsing (gcd, Mod)
        with time_limit(self.time_limit_s, args.mode), sympy_failures(args.mode):
            value = build_expression(args.expression, variables=True, names=names,
                                     constants=constants)
            if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
                raise ToolError(INVALID_ARGUMENT,
                                f"argument 'expression': {args.expression!r} is not finite")
            result = action[args.mode](value)
            text, data = _show_value(result)
        data = {"mode": args.mode, **data}
        notes = _name_notes(constants, names, [result])
        if notes:
            text = "\n".join([text, *notes])
            data["notes"] = notes
        return ToolOutput(text, [], data)


# ------------------------------------------------------------------ geometry

MAX_UNKNOWN_POINTS = 8
MAX_ANGLE_FACTS = 6  # angles other than 90 / 180 degrees: each may double the candidates
MAX_CANDIDATES = 64  # figures kept while placing points
MAX_EXACT_OPS = 150  # an exact coordinate larger than this makes the figure go decimal
_QUERIES = ("length", "distance", "angle", "area", "perimeter", "radius", "diameter",
            "circumference")
_CIRCLE_QUERIES = ("area", "perimeter", "radius", "diameter", "circumference")
_TOLERANCE = 1e-9  # relative, for comparing values of different solutions and given facts


def _query_names(query: str, fig: formal.Figure) -> tuple[str, list[str]]:
    """(kind, point names) of a query such as 'angle A B C' (or 'angle ABC')."""
    words = query.split()
    kind = words[0].lower() if words else ""
    if kind not in _QUERIES:
        raise ToolError(INVALID_ARGUMENT, f"argument 'query': {query!r} does not start with "
                        f"one of {', '.join(_QUERIES)} (e.g. 'length A B', 'angle A B C', "
                        "'area A B C', 'radius O')")
    names = words[1:]
    if len(names) == 1 and names[0] not in fig.points and len(names[0]) > 1 \
            and all(ch in fig.points for ch in names[0]):
        names = list(names[0])  # 'angle ABC'
    for n in names:
        if n not in fig.points:
            raise ToolError(INVALID_ARGUMENT, f"argument 'query': point {n} is not in the figure "
                            f"(its points: {', '.join(fig.points) or 'none'})")
    if len(set(names)) != len(names):
        raise ToolError(INVALID_ARGUMENT, f"argument 'query': a point repeats in {query!r}")
    if len(names) == 1 and kind in _CIRCLE_QUERIES:
        if fig.circle(names[0]) is None:
            raise ToolError(INVALID_ARGUMENT, f"argument 'query': there is no circle about "
                            f"{names[0]} in the figure")
        return kind, names
    need = {"length": 2, "distance": 2, "angle": 3}.get(kind)
    if (need is None and len(names) < 3) or (need is not None and len(names) != need):
        what = "a circle's centre, or " if kind in _CIRCLE_QUERIES else ""
        raise ToolError(INVALID_ARGUMENT, f"argument 'query': '{kind}' takes {what}"
                        f"{need or '3 or more'} points, got {len(names)} in {query!r}")
    return kind, names


def _sub(p, q):
    return p[0] - q[0], p[1] - q[1]


def _dot(u, v):
    return u[0] * v[0] + u[1] * v[1]


def _cross(u, v):
    return u[0] * v[1] - u[1] * v[0]


def _numeric(value: Any) -> complex | None:
    try:
        return complex(sympy.N(value, 30))
    except (TypeError, ValueError):
        return None


class _Figure:
    """A figure's points as sympy coordinates: given ones exact, unknown ones as symbols,
    with the polynomial equations and side conditions its facts impose."""

    def __init__(self, fig: formal.Figure, use_coordinates: bool):
        self.fig = fig
        self.picture = {n: (sympy.Rational(xy[0]), sympy.Rational(xy[1]))
                        for n, xy in fig.points.items() if xy is not None}
        self.coords: dict[str, tuple[Any, Any]] = dict(self.picture) if use_coordinates else {}
        if len(self.coords) == 1 and len(fig.points) > 1:
            # One placed point fixes where the figure is, not how it is turned; every query
            # (lengths, angles, areas, radii) is the same in a moved copy, so the point is
            # solved for like the others in the frame below (one unknown fewer than a free
            # rotation: without it Groebner ran into the time limit on such figures)
            self.coords = {}
        unknown = [n for n in fig.points if n not in self.coords]
        if len(unknown) > MAX_UNKNOWN_POINTS:
            raise ToolError(INVALID_ARGUMENT, f"argument 'figure': {len(unknown)} points to find "
                            f"({', '.join(unknown)}); at most {MAX_UNKNOWN_POINTS}")
        self.framed = bool(unknown) and not self.coords
        # Facts other than lengths and radii (angles, incidences, perpendicular, parallel)
        # hold in every scaled copy of a figure: with none of them and no placed points, the
        # frame's unit is drawn as 1 (one unknown fewer), and only angles are fixed.
        self.scale_free = (self.framed and len(unknown) > 1
                           and not any(f.kind == "length" for f in fig.facts)
                           and not any(c.radius is not None for c in fig.circles))
        if self.framed:
            self._fix_frame(unknown)
        for n in unknown:
            self.coords.setdefault(n, (sympy.Symbol(f"x_{n}", real=True),
                                       sympy.Symbol(f"y_{n}", real=True)))
        self.equations: list[tuple[Any, formal.Fact]] = []
        self.branches: list[tuple[list[Any], formal.Fact]] = []  # one equation of each holds
        self.approximate = False  # whether decimals stand in for values without radicals
        self.conditions: list[Callable[[dict], bool]] = []
        self.notes: list[str] = []
        for fact in fig.facts:
            self._add(fact)

    def _fix_frame(self, unknown: list[str]) -> None:
        """No point has coordinates: put one at the origin and another on the positive x
        axis (any figure can be moved there; mirror images stay, the picture picks)."""
        order = [n for f in self.fig.facts for n in f.names]
        order += [n for c in self.fig.circles for n in (c.centre, c.through) if n]
        order += [n for s in self.fig.segments for n in s] + unknown
        first = order[0]
        self.coords[first] = (sympy.Integer(0), sympy.Integer(0))
        linked = [f.names[1 - f.names.index(first)] for f in self.fig.facts
                  if f.kind == "length" and first in f.names]
        second = next((n for n in linked + order if n != first), None)
        if second is not None:
            self.coords[second] = (sympy.Integer(1) if self.scale_free
                                   else sympy.Symbol(f"x_{second}", positive=True),
                                   sympy.Integer(0))

    def radius2(self, centre: str) -> Any:
        """The squared radius of the circle about `centre`."""
        c = self.fig.circle(centre)
        if c.radius is not None:
            return sympy.Rational(c.radius) ** 2
        u = _sub(self.coords[c.through], self.coords[centre])
        return _dot(u, u)

    def _add(self, fact: formal.Fact) -> None:
        p = [self.coords[n] for n in fact.names]
        involved = list(p)
        if fact.kind == "on_circle" and self.fig.circle(fact.names[1]).through:
            involved.append(self.coords[self.fig.circle(fact.names[1]).through])
        if all(v.is_number for xy in involved for v in xy):
            if not self._holds(fact, p):
                self.notes.append(f"the given '{_fact_text(fact)}' does not hold exactly in "
                                  "the coordinates; they were used as given")
            return
        if fact.kind == "length":
            u = _sub(p[0], p[1])
            eq = _dot(u, u) - sympy.Rational(fact.value) ** 2
        elif fact.kind == "angle":
            u, w = _sub(p[0], p[1]), _sub(p[2], p[1])
            theta = sympy.Rational(fact.value)
            if theta == 90:
                eq = _dot(u, w)
            elif theta == 180:
                eq = _cross(u, w)
                self.conditions.append(lambda s, u=u, w=w: _positive(-_dot(u, w), s))
            else:
                # w is u turned by +theta or by -theta: two branches of degree 2, where
                # dot(u, w)^2 = cos^2 |u|^2 |w|^2 would be one equation of degree 4.
                cos, sin = sympy.cos(sympy.pi * theta / 180), sympy.sin(sympy.pi * theta / 180)
                if cos.has(sympy.cos, sympy.sin) or sin.has(sympy.cos, sympy.sin):
                    # no radicals for this angle (37 degrees): exact forms would only grow,
                    # so the figure is computed with 50-digit decimals instead
                    cos, sin = sympy.Float(sympy.N(cos, 50), 50), sympy.Float(sympy.N(sin, 50), 50)
                    self.approximate = True
                branches = [sympy.expand(cos * _cross(u, w) - sin * _dot(u, w)),
                            sympy.expand(cos * _cross(u, w) + sin * _dot(u, w))]
                self.branches.append((branches, fact))
                sign = 1 if theta < 90 else -1
                self.conditions.append(lambda s, u=u, w=w, k=sign: _positive(k * _dot(u, w), s))
                return
        elif fact.kind == "on_segment":
            ab, ap = _sub(p[2], p[1]), _sub(p[0], p[1])
            eq = _cross(ab, ap)
            self.conditions.append(
                lambda s, ab=ab, ap=ap: _positive(_dot(ab, ap) + _TOLERANCE, s)
                and _positive(_dot(ab, ab) - _dot(ab, ap) + _TOLERANCE, s))
        elif fact.kind == "on_circle":
            u = _sub(p[0], p[1])
            eq = _dot(u, u) - self.radius2(fact.names[1])
        elif fact.kind == "perpendicular":
            eq = _dot(_sub(p[1], p[0]), _sub(p[3], p[2]))
        else:  # parallel
            eq = _cross(_sub(p[1], p[0]), _sub(p[3], p[2]))
        self.equations.append((sympy.expand(eq), fact))

    def _holds(self, fact: formal.Fact, p: list[tuple[Any, Any]]) -> bool:
        """Whether a fact about placed points holds (to a relative 1e-9)."""
        q = [tuple((_numeric(v) or 0j).real for v in xy) for xy in p]
        if fact.kind == "length":
            return math.isclose(math.dist(q[0], q[1]), float(fact.value), rel_tol=_TOLERANCE)
        if fact.kind == "angle":
            u, w = _sub(q[0], q[1]), _sub(q[2], q[1])
            degrees = math.degrees(math.atan2(abs(_cross(u, w)), _dot(u, w)))
            return math.isclose(degrees, float(fact.value), rel_tol=_TOLERANCE)
        if fact.kind == "on_circle":
            r2 = (_numeric(self.radius2(fact.names[1])) or 0j).real
            d2 = _dot(_sub(q[0], q[1]), _sub(q[0], q[1]))
            return math.isclose(d2, r2, rel_tol=_TOLERANCE)
        if fact.kind == "on_segment":
            ab, ap = _sub(q[2], q[1]), _sub(q[0], q[1])
            scale = _dot(ab, ab) + _dot(ap, ap)
            return (abs(_cross(ab, ap)) <= _TOLERANCE * scale
                    and -_TOLERANCE * scale <= _dot(ab, ap) <= _dot(ab, ab) * (1 + _TOLERANCE))
        u, w = _sub(q[1], q[0]), _sub(q[3], q[2])
        value = _dot(u, w) if fact.kind == "perpendicular" else _cross(u, w)
        return abs(value) <= _TOLERANCE * math.hypot(*u) * math.hypot(*w)

    def solve(self) -> list[dict[str, tuple[Any, Any]]]:
        """Every real figure satisfying the facts, as point coordinates (possibly still
        symbolic where the facts leave a point free).

        Points are placed one at a time, as with ruler and compass: next is an unplaced
        point whose own coordinates are the only unknowns left in at least as many facts
        as it has unknown coordinates; those few equations are solved exactly, each root
        giving one candidate figure. Facts whose points are all placed then only check the
        candidates. What stays coupled is solved jointly at the end.
        """
        if len(self.branches) > MAX_ANGLE_FACTS:
            raise ToolError(INVALID_ARGUMENT, f"argument 'figure': {len(self.branches)} angles "
                            f"other than 90 and 180 degrees to solve for; at most "
                            f"{MAX_ANGLE_FACTS}")
        # each constraint: the equations one of which must hold (two for a turn by an angle)
        pending = [[e] for e, _ in self.equations] + [b for b, _ in self.branches]
        own = {n: {v for v in xy if isinstance(v, sympy.Symbol)}
               for n, xy in self.coords.items()}
        own = {n: s for n, s in own.items() if s}
        known: set[Any] = set()
        candidates: list[dict[Any, Any]] = [{}]
        mirror_fixed = not self.framed

        def unknowns(constraint) -> set[Any]:
            return set().union(*(e.free_symbols for e in constraint)) - known

        while own:
            best = None
            for name, symbols in own.items():
                usable = [c for c in pending if unknowns(c) and unknowns(c) <= symbols]
                if len(usable) >= len(symbols):
                    key = (sum(len(c) > 1 for c in usable), -len(usable))
                    if best is None or key < best[0]:
                        best = (key, name, usable)
            if best is None:
                break
            _, name, usable = best
            symbols = sorted(own.pop(name), key=str)
            placed = []
            for cand in candidates:
                for pick in itertools.product(*usable):
                    eqs = [e.subs(cand) for e in pick]
                    for sol in _solve_point(eqs, symbols):
                        if all(_real(v) for v in sol.values()):
                            placed.append({**cand, **sol})
            if not self.approximate and any(sympy.count_ops(v) > MAX_EXACT_OPS
                                            for c in placed for v in c.values()):
                self.approximate = True  # exact forms have grown too large to handle
            if self.approximate:
                placed = [{k: _as_float50(v) for k, v in c.items()} for c in placed]
            if not mirror_fixed and any(s.name.startswith("y_") for s in symbols):
                # the free frame admits mirror images: keep the upper one (the picture and
                # every queried value are mirror-blind)
                y = next(s for s in symbols if s.name.startswith("y_"))
                upper = [c for c in placed if not c.get(y, sympy.Integer(0)).is_number
                         or (_numeric(c[y]) or 0j).real >= -1e-12]
                placed, mirror_fixed = upper, True
            candidates = _unique(placed)
            if len(candidates) > MAX_CANDIDATES:
                raise ToolError(EXECUTION_FAILED, f"more than {MAX_CANDIDATES} figures fit the "
                                "facts so far; give more coordinates or facts")
            known.update(symbols)
            pending = [c for c in pending if c not in usable]
        solutions = []
        for cand in candidates:
            rest = [[e.subs(cand) for e in c] for c in pending]
            checks = [c for c in rest if not set().union(*(e.free_symbols for e in c))]
            if not all(any(_is_zero(e) for e in c) for c in checks):
                continue
            coupled = [c for c in rest if c not in checks]
            if not coupled:
                solutions.append(cand)
                continue
            for pick in itertools.product(*coupled):
                free = sorted(set().union(*(e.free_symbols for e in pick)), key=str)
                for sol in _solve_exactly(list(pick), free):
                    if all(_real(v) for v in sol.values()):
                        solutions.append({**{k: v.subs(sol) for k, v in cand.items()}, **sol})
        figures = []
        for sol in solutions:
            coords = {n: (sympy.sympify(x).subs(sol), sympy.sympify(y).subs(sol))
                      for n, (x, y) in self.coords.items()}
            values = [v for xy in coords.values() for v in xy]
            if any(v.is_real is False for v in values):
                continue
            if any(v.is_number and abs((_numeric(v) or 0j).imag) > 1e-20 for v in values):
                continue
            if all(cond(sol) for cond in self.conditions):
                figures.append(coords)
        return figures

    def orientation_match(self, coords: dict[str, tuple[Any, Any]]) -> int:
        """How many point triples turn the same way as in the given coordinates."""
        names = [n for n in self.picture if n in coords and all(v.is_number for v in coords[n])]
        if len(names) < 3 or len(names) > 12:
            return 0
        score = 0
        for a, b, c in itertools.combinations(names, 3):
            seen = _cross(_sub(self.picture[b], self.picture[a]),
                          _sub(self.picture[c], self.picture[a]))
            got = _numeric(_cross(_sub(coords[b], coords[a]), _sub(coords[c], coords[a])))
            if seen != 0 and got is not None and abs(got.real) > 1e-12:
                score += 1 if (seen > 0) == (got.real > 0) else -1
        return abs(score) if self.framed else score  # a free frame may be mirrored


def _circle_form(eq: Any, x: Any, y: Any) -> tuple[Any, Any, Any, Any] | None:
    """(a, b, c, d) with eq == a (x^2 + y^2) + b x + c y + d, or None if eq is not of that
    form. Every fact is, once all points but one are placed: a circle or a line."""
    eq = sympy.expand(eq)
    try:
        poly = sympy.Poly(eq, x, y)
    except sympy.PolynomialError:
        return None
    terms = dict(poly.terms())
    a = terms.pop((2, 0), sympy.Integer(0))
    if terms.pop((0, 2), sympy.Integer(0)) != a:
        return None
    b, c = terms.pop((1, 0), sympy.Integer(0)), terms.pop((0, 1), sympy.Integer(0))
    d = terms.pop((0, 0), sympy.Integer(0))
    return None if terms else (a, b, c, d)


def _tidy(value: Any) -> Any:
    """Radicals out of denominators (exact values only; decimals are left alone)."""
    return value if value.has(sympy.Float) else sympy.radsimp(value)


def _quadratic_roots(a: Any, b: Any, c: Any) -> list[Any] | None:
    """Real roots of a t^2 + b t + c (exact); None when every t is a root."""
    if _is_zero(a):
        if _is_zero(b):
            return None if _is_zero(c) else []
        return [_tidy(-c / b)]
    disc = sympy.expand(b * b - 4 * a * c)
    number = _numeric(disc)
    if number is None:
        return [(-b + sympy.sqrt(disc)) / (2 * a), (-b - sympy.sqrt(disc)) / (2 * a)]
    scale = max(1.0, abs(_numeric(b * b) or 0), abs(_numeric(4 * a * c) or 0))
    if abs(number.real) <= _TOLERANCE * scale:
        return [_tidy(-b / (2 * a))]
    if number.real < 0:
        return []
    root = sympy.sqrt(disc)
    return [_tidy((-b + root) / (2 * a)), _tidy((-b - root) / (2 * a))]


def _intersect(f: tuple, g: tuple, x: Any, y: Any) -> list[dict[Any, Any]] | None:
    """Points on both circles-or-lines f and g; None when they do not fix a point."""
    (a1, b1, c1, d1), (a2, b2, c2, d2) = f, g
    if _is_zero(a1) and not _is_zero(a2):
        (a1, b1, c1, d1), (a2, b2, c2, d2) = g, f
    if not _is_zero(a2):  # two circles: their radical axis is a line through both points
        b2, c2, d2 = (sympy.expand(a2 * b1 - a1 * b2), sympy.expand(a2 * c1 - a1 * c2),
                      sympy.expand(a2 * d1 - a1 * d2))
    if _is_zero(b2) and _is_zero(c2):
        return None  # the same circle, or concentric
    if _is_zero(a1):  # two lines
        det = sympy.expand(b1 * c2 - b2 * c1)
        if _is_zero(det):
            return None
        return [{x: _tidy((c1 * d2 - c2 * d1) / det),
                 y: _tidy((b2 * d1 - b1 * d2) / det)}]
    # a circle and the line b2 x + c2 y + d2 = 0: parametrise by the better-scaled unknown
    if abs(_numeric(c2) or 0) >= abs(_numeric(b2) or 0):
        t, other = x, y
        other_of_t = -(b2 * t + d2) / c2
    else:
        t, other = y, x
        other_of_t = -(c2 * t + d2) / b2
    quad = sympy.expand(a1 * (t ** 2 + other_of_t ** 2) + b1 * (x if t == x else other_of_t)
                        + c1 * (y if t == y else other_of_t) + d1)
    coeffs = [quad.coeff(t, k) for k in (2, 1, 0)]
    roots = _quadratic_roots(*coeffs)
    if roots is None:
        return None
    return [{t: r, other: _tidy(other_of_t.subs(t, r))} for r in roots]


def _solve_point(eqs: list[Any], symbols: list[Any]) -> list[dict[Any, Any]]:
    """Exact real values of one point's unknown coordinates (x, or x and y) from facts
    that only it leaves open; sympy.solve when they are not circles and lines."""
    if len(symbols) == 2:
        x, y = symbols
        forms = [_circle_form(e, x, y) for e in eqs]
        if all(f is not None for f in forms):
            for i, j in itertools.combinations(range(len(forms)), 2):
                found = _intersect(forms[i], forms[j], x, y)
                if found is not None:
                    return [sol for sol in found
                            if all(_is_zero(e.subs(sol)) for e in eqs)]
    elif len(symbols) == 1:
        (x,) = symbols
        for e in eqs:
            e = sympy.expand(e)
            if e.is_polynomial(x) and sympy.degree(e, x) <= 2:
                roots = _quadratic_roots(e.coeff(x, 2), e.coeff(x, 1), e.coeff(x, 0))
                if roots is not None:
                    return [{x: r} for r in roots
                            if all(_is_zero(f.subs(x, r)) for f in eqs)
                            and (x.is_positive is not True or (_numeric(r) or 0j).real > 0)]
    return _solve_exactly(eqs, symbols)


def _solve_exactly(eqs: list[Any], symbols: list[Any]) -> list[dict[Any, Any]]:
    """Every solution of facts that stay coupled; INVALID_ARGUMENT when they leave points
    free to move (fewer equations than unknowns, or a solution set of positive dimension),
    EXECUTION_FAILED only when sympy fails on facts that do fix the figure."""
    try:
        found = sympy.solve(eqs, symbols, dict=True)
    except NotImplementedError:
        found = None
    if found:
        return found
    basis = _groebner(eqs, symbols)
    if basis is not None and list(basis.exprs) == [1]:
        return []  # provably no figure
    if len(eqs) < len(symbols) or (basis is not None and not basis.is_zero_dimensional):
        raise ToolError(INVALID_ARGUMENT, "argument 'figure': the facts do not fix the figure "
                        "(its points can still move, e.g. angles alone leave its size free); "
                        "give more lengths or coordinates")
    raise ToolError(EXECUTION_FAILED, "sympy cannot solve the figure's facts exactly; give "
                    "more points coordinates")


def _groebner(eqs: list[Any], symbols: list[Any]) -> Any:
    """The Groebner basis of polynomial equations; None when they are not polynomials or
    sympy cannot compute it."""
    if not all(e.is_polynomial(*symbols) for e in eqs):
        return None
    numerators = [sympy.fraction(sympy.together(e))[0] for e in eqs]
    try:
        return sympy.groebner(numerators, *symbols, order="grevlex")
    except (sympy.PolynomialError, NotImplementedError):
        return None


def _real(value: Any) -> bool:
    if value.is_real is False:
        return False
    if value.is_number:
        number = _numeric(value)
        return number is None or abs(number.imag) <= 1e-20 * max(1.0, abs(number.real))
    return True


def _is_zero(value: Any) -> bool:
    """Zero to 30 digits (exact arithmetic: a nonzero value is far from 1e-9 unless the
    figure is nearly degenerate)."""
    number = _numeric(value)
    return number is not None and abs(number) <= _TOLERANCE


def _unique(candidates: list[dict[Any, Any]]) -> list[dict[Any, Any]]:
    out, seen = [], set()
    for cand in candidates:
        key = tuple(sorted((str(k), round((_numeric(v) or 0j).real, 9) if v.is_number
                            else str(v)) for k, v in cand.items()))
        if key not in seen:
            seen.add(key)
            out.append(cand)
    return out


def _as_float50(value: Any) -> Any:
    return sympy.Float(sympy.re(sympy.N(value, 50)), 50) if value.is_number else value


class _Crossing(Exception):
    """The queried polygon crosses itself in this figure."""


def _present(value: Any, kind: str, approximate: bool) -> tuple[str, dict[str, Any]]:
    """'= exact ≈ decimal' (or '≈ decimal' when the figure was computed in decimals) and
    its data entry. An angle within 1e-30 of a fraction of a degree with denominator <= 12
    is shown as that fraction (nested radicals of acos rarely simplify)."""
    if approximate or value.has(sympy.Float):
        decimal, as_float = _decimal_text(value)
        return f"≈ {decimal}", {"exact": None, "value": as_float}
    if kind == "angle":
        degrees = Decimal(str(sympy.N(value, 50)))
        nearest = Fraction(degrees).limit_denominator(12)
        if abs(Decimal(nearest.numerator) / nearest.denominator - degrees) < Decimal("1e-30"):
            value = sympy.Rational(nearest.numerator, nearest.denominator)
    if sympy.count_ops(value) <= 60:
        value = sympy.sqrtdenest(sympy.simplify(value))
    text, data = _show_value(value)
    return f"= {text}", data


def _positive(expr: Any, substitution: dict) -> bool:
    """Whether expr >= 0 after substitution (True while it is still symbolic)."""
    value = sympy.sympify(expr).subs(substitution)
    if not value.is_number:
        return True
    number = _numeric(value)
    return number is None or number.real >= -1e-12


def _fact_text(fact: formal.Fact) -> str:
    return formal.Figure(facts=[fact]).to_text().strip()


def _simple_polygon(pts: list[tuple[complex, complex]]) -> bool:
    """Whether no two non-adjacent edges of the polygon cross (numerically)."""
    n = len(pts)
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]

    def side(p, q, r) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            (p1, p2), (q1, q2) = edges[i], edges[j]
            d1, d2 = side(q1, q2, p1), side(q1, q2, p2)
            d3, d4 = side(p1, p2, q1), side(p1, p2, q2)
            if d1 * d2 < 0 and d3 * d4 < 0:
                return False
    return True


def _query_value(kind: str, names: list[str], coords: dict[str, tuple[Any, Any]],
                 model: _Figure) -> Any:
    """The queried quantity (exact sympy value) in one solved figure; None when the facts
    leave it undetermined. Uses sympy.geometry on the point coordinates."""
    involved = list(names)
    circle = model.fig.circle(names[0]) if len(names) == 1 else None
    if circle is not None and circle.through:
        involved.append(circle.through)
    if any(not v.is_number for n in involved for v in coords[n]):
        return None
    pts = [sympy.Point2D(*coords[n]) for n in names]
    if circle is not None:
        if circle.radius is not None:
            r2 = sympy.Rational(circle.radius) ** 2
        else:
            u = _sub(coords[circle.through], coords[names[0]])
            r2 = _dot(u, u)
        r = sympy.sqrt(r2)
        return {"radius": r, "diameter": 2 * r, "circumference": 2 * sympy.pi * r,
                "perimeter": 2 * sympy.pi * r, "area": sympy.pi * r2}[kind]
    if kind in ("length", "distance"):
        return pts[0].distance(pts[1])
    if kind == "angle":
        if pts[0] == pts[1] or pts[2] == pts[1]:
            raise ToolError(INVALID_ARGUMENT, f"argument 'query': the angle's arms have no "
                            f"length ({names[1]} coincides with an end)")
        angle = sympy.Ray(pts[1], pts[0]).angle_between(sympy.Ray(pts[1], pts[2]))
        return angle * 180 / sympy.pi
    numeric = [tuple((_numeric(v) or 0j).real for v in coords[n]) for n in names]
    if not _simple_polygon(numeric):
        raise _Crossing
    if kind == "perimeter":
        return sum(pts[i].distance(pts[(i + 1) % len(pts)]) for i in range(len(pts)))
    polygon = sympy.Polygon(*pts)  # collapses to a Segment or Point when degenerate
    return abs(polygon.area) if isinstance(polygon, sympy.Polygon) else sympy.Integer(0)


class GeometrySolver(Tool):
    """Computes a length, angle, area, perimeter, radius or circumference in a figure.

    `figure` is in the formal figure language (diagram_to_formal emits it), one statement
    a line: `point A (0, 0)`, `point P` (position unknown), `segment A B`, `circle O r=5`,
    `circle O through A`, `length A B = 5`, `angle A B C = 60` (degrees, vertex in the
    middle), `on P segment A B`, `on P circle O`, `perpendicular A B C D`, `parallel A B C D`.
    `query`: "length A B", "angle A B C", "area A B C D" (polygon, vertices in order),
    "perimeter A B C", "area O", "radius O", "diameter O" or "circumference O" (circle
    about O). Numbers in the figure are integers, decimals or fractions (7/2). Given
    coordinates are used exactly (integers give e.g. 5*sqrt(2), not 7.07); points without
    coordinates are solved for from the facts (2 s limit): when two figures fit (e.g. two
    sides and a non-included angle), both values are given. With use_coordinates=false
    every point is solved for from the facts alone, the coordinates only choosing the
    solution that looks like the picture: use it when the picture is not to scale. One
    placed point is solved for like the others (it fixes where the figure is, not how it is
    turned). Facts without a length or radius, and at most one placed point, fix angles
    only (the figure is solved at unit size; a length, area or radius is refused). Answers
    are exact plus a decimal (decimal only with angles like 37 degrees that have no radical
    form), in the figure's units (pixels for a figure read from an image).
    """

    name = "geometry_solver"
    family = "math"

    class Arguments(ToolArguments):
        figure: Annotated[str, Field(min_length=1, max_length=formal.MAX_CHARS,
                                     description="the figure in the formal language, one "
                                                 "statement a line")]
        query: Annotated[str, Field(min_length=1, max_length=200,
                                    description="what to compute, e.g. 'length A B', "
                                                "'angle A B C', 'area A B C', 'radius O'")]
        use_coordinates: Annotated[bool, Field(
            description="use the given coordinates (default); false: solve every point "
                        "from the facts, for figures not drawn to scale")] = True

    def __init__(self, time_limit_s: float = DEFAULT_TIME_LIMIT_S):
        self.time_limit_s = time_limit_s

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        try:
            fig = formal.parse(args.figure)
        except formal.FormalError as exc:
            raise ToolError(INVALID_ARGUMENT, f"argument 'figure': {exc}") from None
        kind, names = _query_names(args.query, fig)
        with time_limit(self.time_limit_s, "solving the figure"), \
                sympy_failures("solving the figure"):
            model = _Figure(fig, args.use_coordinates)
            figures = model.solve()
            if not figures:
                raise ToolError(INVALID_ARGUMENT, "argument 'figure': no real figure satisfies "
                                "all its facts (check the given lengths and angles)")
            values = []
            for f in figures:
                try:
                    values.append((_query_value(kind, names, f, model), f))
                except _Crossing:
                    pass  # the vertices are not in order around a polygon in this figure
            if not values:
                raise ToolError(INVALID_ARGUMENT, f"argument 'query': the polygon "
                                f"{' '.join(names)} crosses itself; list its vertices in order "
                                "around it")
            if model.scale_free and kind != "angle" and any(
                    (n := _numeric(v)) is None or abs(n) > _TOLERANCE for v, _ in values):
                raise ToolError(INVALID_ARGUMENT, "argument 'figure': the facts do not fix the "
                                f"figure's size, so not {kind} {' '.join(names)} (no length or "
                                "radius, nor two points placed by coordinates); give one")
            if any(v is None for v, _ in values):
                raise ToolError(INVALID_ARGUMENT, f"argument 'figure': the facts do not fix "
                                f"{kind} {' '.join(names)}; give more lengths, angles or "
                                "coordinates")
            groups = _distinct(values)
            if len(groups) > 1 and model.picture:
                best = max(model.orientation_match(f) for _, f in values)
                groups = _distinct([(v, f) for v, f in values
                                    if model.orientation_match(f) == best])
            shown = [_present(v, kind, model.approximate) for v, _ in groups]
        unit = " degrees" if kind == "angle" else ""
        label = f"{kind} {' '.join(names)}"
        if len(shown) == 1:
            text = f"{label} {shown[0][0]}{unit}"
        else:
            text = (f"{label} is not determined: the facts allow "
                    + " or ".join(t.lstrip("= ") + unit for t, _ in shown))
        # from the facts when a point the answer depends on was placed from them (by
        # lengths, or by angles alone, which leave model.equations empty)
        given = model.picture if args.use_coordinates else {}
        circle = model.fig.circle(names[0]) if len(names) == 1 else None
        involved = names + ([circle.through] if circle is not None and circle.through else [])
        source = "the facts" if any(n not in given for n in involved) else "the coordinates"
        lines = [text, f"(computed from {source})"] + model.notes[:5]
        data = {"query": label, "status": "determined" if len(shown) == 1 else "ambiguous",
                "values": [d for _, d in shown], **(shown[0][1] if len(shown) == 1 else {}),
                "notes": model.notes[:5]}
        return ToolOutput("\n".join(lines), [], data)


def _distinct(values: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """One (value, figure) per numerically distinct value, in order."""
    out: list[tuple[Any, Any]] = []
    for value, figure in values:
        number = _numeric(value)
        if not any(number is not None and (n := _numeric(v)) is not None
                   and abs(number - n) <= _TOLERANCE * max(1.0, abs(number)) for v, _ in out):
            out.append((value, figure))
    return out
