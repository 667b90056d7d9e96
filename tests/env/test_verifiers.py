"""Expression verification: LaTeX, sympy equivalence in the worker pool, the safety layers,
timeouts that really fire on pathological answers, and dead workers being replaced."""

import dataclasses
import os
import signal
import threading
import time

import pytest

from vista_jax.env import rewards
from vista_jax.env.rewards import (ExpressionPool, UnsafeExpression, check_code_safe,
                                   check_text_safe, configure_expression_verifier,
                                   expression_pool, expression_stats, expressions_equivalent,
                                   latex_to_plain, safe_parse, verify, verify_details)
from vista_jax.env.tasks.base import Task

PATHOLOGICAL = "9^9^9^9"  # sympy computes the integer power exactly: minutes, in C


def _expr(answer, tolerance=0.0):
    return Task(task_id="e", family="f", seed=0, split="train", question="q?", images=(),
                answer=answer, answer_type="expression", tolerance=tolerance)


@pytest.fixture(scope="module", autouse=True)
def pool():
    # A generous default, so that a loaded machine does not turn slow-but-right checks into
    # timeouts; the timeout tests pass their own short budget.
    configure_expression_verifier(workers=1, timeout_s=20.0)
    yield expression_pool()
    configure_expression_verifier()  # back to the defaults (closes this pool)


# --- LaTeX ---------------------------------------------------------------------------------

@pytest.mark.parametrize("latex,plain", [
    ("\\frac{1}{2}x", "((1)/(2))x"), ("\\dfrac{a+1}{b}", "((a+1)/(b))"),
    ("\\tfrac12", "((1)/(2))"), ("\\frac{\\sqrt{3}}{2}", "((sqrt(3))/(2))"),
    ("\\sqrt{x+1}", "sqrt(x+1)"), ("\\sqrt[3]{8}", "root((8),(3))"), ("\\sqrt2", "sqrt(2)"),
    ("\\pi r^2", "pi r^2"), ("2\\pi", "2 pi"), ("a \\cdot b", "a * b"), ("a\\times b", "a* b"),
    ("6 \\div 3", "6 / 3"), ("x^{2y}", "x^(2y)"), ("x_{1} + x_2", "x_1 + x_2"),
    ("\\left( x+1 \\right)^{2}", "( x+1 )^(2)"), ("\\left[ x \\right]", "( x )"),
    ("\\left|x\\right|", "Abs(x)"), ("\\sin\\theta", "sin theta"), ("\\ln(x)", "ln (x)"),
    ("\\lambda", "lamda"), ("\\operatorname{floor}(x)", "floor (x)"),
    ("3\\,\\text{cm}", "3 cm"), ("$x^2$", "x^2"), ("\\(x\\)", "x"), ("\\displaystyle x", "x"),
])
def test_latex_to_plain(latex, plain):
    assert latex_to_plain(latex) == plain


@pytest.mark.parametrize("latex", ["\\infty", "\\int_0^1 x", "\\frac{1}", "\\sqrt{x", "\\foo{x}"])
def test_unknown_latex_is_an_error(latex):
    with pytest.raises(ValueError):
        latex_to_plain(latex)


# --- equivalence (through the worker) ---------------------------------------------------------

@pytest.mark.parametrize("pred,gold,ok", [
    # plain forms, implicit multiplication, ^ as power
    ("2*(x + 1)", "2*x + 2", True), ("2x+2", "2(x+1)", True), ("2*x", "2*x + 2", False),
    ("(x+1)^2", "x**2 + 2*x + 1", True), ("(x+1)^2", "x^2 + 1", False), ("xy", "x*y", True),
    ("sin(x)^2 + cos(x)^2", "1", True), ("sqrt(8)", "2*sqrt(2)", True), ("0.5", "1/2", True),
    ("3.14", "pi", False), ("3.141592653589793", "pi", True), ("e^(2x)", "exp(2*x)", True),
    ("5!", "120", True), ("x^2 - 1", "(x - 1)(x + 1)", True),
    # numeric fallback: true for the positive reals, not provable by simplify
    ("log(x*y)", "log(x) + log(y)", True), ("sqrt(x^2)", "x", True),
    # LaTeX
    ("\\frac{1}{2}x", "x/2", True), ("\\frac{\\sqrt{3}}{2}", "sqrt(3)/2", True),
    ("\\sqrt{12}", "2\\sqrt{3}", True), ("\\pi r^2", "pi*r**2", True),
    ("\\left( a+b \\right)^{2}", "a^2 + 2ab + b^2", True), ("2 \\cdot \\pi", "2pi", True),
    ("\\sqrt[3]{27}", "3", True), ("\\dfrac{x^{2}-1}{x-1}", "x + 1", True),
    ("$\\frac{3}{4}$", "0.75", True), ("\\frac{3}{5}", "0.75", False),
    # equations
    ("x = 3", "3", True), ("3", "x = 3", True), ("x = 4", "3", False),
    ("2y = 4x + 2", "y = 2x + 1", True), ("y - 2x = 1", "y = 2x + 1", True),
    ("y = 2x", "y = 2x + 1", False), ("2x = 6", "3", False), ("x = 3 = 3", "3", False),
    # tuples
    ("(1, 2)", "(1,2)", True), ("(2, 1)", "(1, 2)", False), ("(1, 2, 3)", "(1, 2)", False),
    ("(1/2, sqrt(4))", "(0.5, 2)", True),
    # answer phrases and junk
    ("The answer is \\boxed{x+1}", "1 + x", True), ("2*(", "2", False), ("", "2", False),
    ("x +* 2", "x + 2", False), ("{}", "1", False), ("1,000", "1000", True),
])
def test_expression_equivalence(pred, gold, ok):
    v = verify_details(pred, _expr(gold))
    assert v.ok is ok, v


def test_expression_tolerance_for_constants():
    assert not verify("1.414", _expr("sqrt(2)"))
    assert verify("1.414", _expr("sqrt(2)", tolerance=0.001))
    assert not verify("1.4", _expr("sqrt(2)", tolerance=0.001))


def test_expression_rules_and_cheap_paths():
    before = expression_stats()
    assert verify_details("x^2+1", _expr("x^2 + 1")).rule == "expression_identical"
    assert verify_details("x**2 + 1", _expr("x^2+1")).rule == "expression_identical"
    assert verify_details("0.50", _expr("0.5")).rule == "expression_numeric"
    after = expression_stats()
    assert after["requests"] == before["requests"]  # none of those needed a worker
    assert after["identical"] - before["identical"] == 2 and after["literal"] > before["literal"]
    v = verify_details("x*(x+1)", _expr("x^2 + x"))
    assert v.ok and v.rule in ("expression_symbolic", "expression_identical")
    wrong = verify_details("x^2", _expr("x^2 + x"))
    assert wrong.rule == "expression_mismatch" and " at x=" in wrong.detail
    assert verify_details("log(x*y)", _expr("log(x) + log(y)")).rule == "expression_numeric"


def test_simplest_form_is_required_where_the_task_asks_for_it():
    task = dataclasses.replace(_expr("5*x + 12"), meta={"simplest_form": True})
    for unsimplified in ("3(x + 4) + 2x", "2x + 3x + 12", "5x + 6 + 6", r"5x + \frac{24}{2}"):
        verdict = verify_details(unsimplified, task)
        assert not verdict.ok and verdict.rule == "expression_not_simplified", unsimplified
    for simplest in ("5*x + 12", "12 + 5x", "5.0 x + 12", r"\boxed{5x+12}"):
        assert verify_details(simplest, task).ok, simplest
    assert not verify_details("5x + 13", task).ok
    # without the flag the same unsimplified answer is equivalent, hence right
    assert verify_details("3(x + 4) + 2x", _expr("5*x + 12")).ok


def test_verdicts_are_cached():
    task = _expr("(a + b)^3")
    first = verify_details("a^3 + 3a^2 b + 3a b^2 + b^3", task)
    requests, hits = expression_stats()["requests"], expression_stats()["cache_hits"]
    again = verify_details("a^3 + 3a^2 b + 3a b^2 + b^3", task)
    assert first == again and first.ok
    assert expression_stats()["requests"] == requests
    assert expression_stats()["cache_hits"] == hits + 1


def test_malformed_gold_expression_is_a_clear_error():
    with pytest.raises(ValueError, match="task 'e': expression answer .*cannot be parsed"):
        verify("1", _expr("2 +* 3"))
    with pytest.raises(ValueError, match="unsupported LaTeX"):
        verify("1", _expr("\\infty"))


# --- safety ----------------------------------------------------------------------------------

ATTACKS = [
    "__import__('os').system('touch {marker}')",
    "().__class__.__bases__[0].__subclasses__()",
    "x.__class__", "x . real", "lambda: 1", "import os", "exec('1')", "eval('1')",
    "open('{marker}', 'w')", "[x for x in (1,)]", "x; y", "{{}}", "x if y else z",
    "getattr(x, 'real')", "x" * 2000,
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_code_in_an_answer_never_runs(attack, tmp_path):
    marker = tmp_path / "ran"
    text = attack.format(marker=marker)
    v = verify_details(text, _expr("1"))
    assert not v.ok and v.rule in ("expression_unsafe", "expression_unparsed"), v
    with pytest.raises(ValueError):  # the worker's own checks refuse it too (UnsafeExpression
        safe_parse(text)             # is a ValueError)
    assert not marker.exists()


@pytest.mark.parametrize("text", [
    "__import__('os')", "x.__class__", "x . real", "(x).real", "lambda x: x", "import os",
    "exec(x)", "eval(x)", "x[0]", "x; y", "{}", "x @ y", "`x`", "x\\y", "x" * 1001,
])
def test_text_layer_refuses_code(text):
    with pytest.raises(UnsafeExpression):
        check_text_safe(text)


@pytest.mark.parametrize("code", [
    "Symbol ('x' ).__class__", "__import__ ('os' )", "(lambda :1 )()", "Symbol ('x' )[0]",
    "open ('f' )", "Symbol (x ='y' )", "Integer ('1' )+'s'", "Symbol ('__class__' )",
    "[Integer (1 )]", "(Integer (1 ),(Integer (2 ),))", "Integer (1 )if x else 2",
])
def test_generated_code_is_checked_node_by_node(code):
    names = frozenset(rewards._namespace())
    with pytest.raises(UnsafeExpression):
        check_code_safe(code, names)


def test_generated_code_check_lets_math_through():
    names = frozenset(rewards._namespace())
    check_code_safe("Integer (2 )*Symbol ('x' )**Integer (2 )+sqrt (Float ('0.5' ))", names)
    check_code_safe("(Integer (1 ),Rational (Integer (1 ),Integer (2 )))", names)
    check_text_safe("2x^2 + sin(x)/3 - 1.5e3 = y!")
    with pytest.raises(UnsafeExpression, match="not allowed"):
        check_text_safe("x__y")


def test_in_process_equivalence_matches_the_worker():
    assert expressions_equivalent("2(x+1)", "2x+2")[0]
    assert expressions_equivalent("x.real", "x")[1] == "expression_unsafe"
    with pytest.raises(rewards._GoldError):
        expressions_equivalent("1", "((")


# --- the pool: timeouts, dead workers --------------------------------------------------------

def _wait_dead(pid: int, timeout_s: float = 5.0) -> None:
    """Until `pid` is gone or a zombie (our Popen reaps it later)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still running")


def test_timeout_fires_on_a_pathological_expression_and_the_worker_is_replaced(pool):
    verify("x+1", _expr("1+x+0*y"))  # a worker is up before the clock starts
    [pid] = pool.pids()
    before = expression_stats()
    start = time.monotonic()
    v = verify_details(PATHOLOGICAL, _expr("1"), timeout_s=0.5)
    elapsed = time.monotonic() - start
    assert (v.ok, v.rule) == (False, "expression_timeout") and elapsed < 5.0, (v, elapsed)
    _wait_dead(pid)  # killed, not left running
    after = expression_stats()
    assert after["timeouts"] == before["timeouts"] + 1
    # the same answer again: the cached verdict, no second timeout
    assert verify_details(PATHOLOGICAL, _expr("1"), timeout_s=0.5).rule == "expression_timeout"
    assert expression_stats()["timeouts"] == after["timeouts"]
    # the next check gets a fresh worker
    assert verify("(y+1)^2", _expr("y^2 + 2y + 1"))
    assert pool.pids() and pool.pids()[0] != pid
    assert expression_stats()["replaced"] >= before["replaced"] + 1


def test_compute_reward_passes_its_timeout(pool):
    from vista_jax import protocol
    from vista_jax.env.rewards import RewardConfig, reward_details
    turns = [protocol.parse_assistant_turn("<answer>9^9^9^9^9</answer>")]
    start = time.monotonic()
    d = reward_details(turns, _expr("1"), answered=True,
                       config=RewardConfig(expression_timeout_s=0.3))
    assert d.correct == 0.0 and d.verdict.rule == "expression_timeout"
    assert time.monotonic() - start < 5.0


@pytest.mark.skipif(not os.path.exists("/proc/self/limits"), reason="needs Linux /proc")
def test_workers_run_with_an_address_space_limit(pool):
    verify("u+1", _expr("1+u+0*t"))
    [pid] = pool.pids()
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max address space"))
    soft = line.split()[3]
    assert soft != "unlimited" and int(soft) >= 1024 << 20, line


def test_a_worker_killed_while_idle_is_replaced(pool):
    verify("z+1", _expr("1+z+0*w"))
    [pid] = pool.pids()
    deaths = expression_stats()["worker_deaths"]
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    assert verify("(z+2)^2", _expr("z^2 + 4z + 4"))  # served by a replacement
    assert expression_stats()["worker_deaths"] == deaths + 1
    assert pool.pids()[0] != pid


def test_a_worker_killed_mid_check_fails_that_check_only(pool):
    verify("w+1", _expr("1+w+0*v"))
    [pid] = pool.pids()
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        v=verify_details("9^9^9^9^9^9", _expr("2"), timeout_s=30.0)))
    thread.start()
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    assert not thread.is_alive()
    assert (result["v"].ok, result["v"].rule) == (False, "expression_error"), result
    assert verify("(w+3)^2", _expr("w^2 + 6w + 9"))


def test_pool_arguments_are_checked():
    with pytest.raises(ValueError, match="workers=0"):
        ExpressionPool(workers=0)
    with pytest.raises(ValueError, match="timeout_s=0"):
        ExpressionPool(timeout_s=0)
    with pytest.raises(ValueError, match="memory_limit_mb=10"):
        configure_expression_verifier(memory_limit_mb=10)
    assert expression_pool().timeout_s == 20.0  # a rejected configuration changes nothing
    closed = ExpressionPool()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.request("equiv", "1", "1", 1e-9, None)


def test_concurrent_checks_share_the_pool(pool):
    cases = [(f"(x+{k})^2", f"x^2 + {2 * k}x + {k * k}", True) for k in range(1, 5)] + [
        (f"(x+{k})^2", f"x^2 + {k}x + {k * k}", False) for k in range(1, 5)]
    results = [None] * len(cases)

    def check(i, pred, gold):
        results[i] = verify(pred, _expr(gold))

    threads = [threading.Thread(target=check, args=(i, p, g)) for i, (p, g, _) in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [ok for _, _, ok in cases]


def test_a_forked_child_gets_its_own_pool(pool, monkeypatch):
    monkeypatch.setattr(pool, "owner_pid", -1)  # as the inherited pool looks in a child
    fresh = expression_pool()
    try:
        assert fresh is not pool and fresh.owner_pid == os.getpid()
    finally:
        rewards._POOL = pool  # put the module's pool back for the tests after this one
        fresh.close()
    monkeypatch.undo()
    assert expression_pool() is pool and verify("2(x+1)", _expr("2x + 2"))
