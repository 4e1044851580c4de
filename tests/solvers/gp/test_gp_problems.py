"""PDE problems: the safe expression parser, and derived sources against finite
differences of the exact solution."""


import pytest
import sympy
import torch

from sciml.solvers.gp import Advection, AllenCahn, Poisson, parse_expression

DT = torch.float64

BAD = [
    ("sin(100*q)", "unknown symbol 'q'"),
    ("sin(100*x", "syntax error"),
    ("2x", "syntax error"),
    ("abs(x)", "function 'abs' is not allowed"),
    ("__import__('os')", "function '__import__' is not allowed"),
    ("__import__('os').system('true')", "only plain function calls"),
    ("x.real", "unsupported syntax Attribute"),
    ("x^2", "use '\\*\\*'"),
    ("sin(x, 2)", "exactly one positional argument"),
    ("exp(x=1)", "exactly one positional argument"),
    ("'x'", "unsupported constant"),
    ("lambda: 1", "unsupported syntax Lambda"),
    ("x if x else 1", "unsupported syntax IfExp"),
    ("9**9**9", "beyond"),
    ("(10**60)**60", "overflows"),
    ("x < 1", "unsupported syntax Compare"),
    ("x // 2", "unsupported operator FloorDiv"),
    ("sin", "without arguments"),
    ("1/(x - x)", "division by zero"),
    ("", "empty"),
    ("1e999*x", "non-finite"),
    ("x" + "+x" * 1500, "longer than"),
]


@pytest.mark.parametrize("text,reason", BAD)
def test_parser_rejects_with_clear_message(text, reason):
    with pytest.raises(ValueError, match=reason) as err:
        parse_expression(text, ["x", "y"], "Poisson")
    message = str(err.value)
    assert message.startswith("Poisson: ")
    if len(text) < 100:
        assert repr(text) in message


def test_problem_names_itself_in_errors():
    with pytest.raises(ValueError, match=r"^AllenCahn: cannot use solution 'sin\(t\)': unknown symbol 't'"):
        AllenCahn("sin(t)", [(0, 1), (0, 1)])
    with pytest.raises(ValueError, match=r"^Advection: cannot use solution 'y'"):
        Advection("y", beta=1.0, domain=[(0, 1), (0, 1)])


def test_parser_accepts_and_matches_sympy():
    x, y = sympy.symbols("x y", real=True)
    expr = parse_expression("-sin(2*pi*x)**2 + 3.5e-1*exp(-y/2) + sqrt(1 + x**2) * tanh(y) - atan(x)", ["x", "y"])
    expected = -sympy.sin(2 * sympy.pi * x) ** 2 + 0.35 * sympy.exp(-y / 2) + sympy.sqrt(1 + x**2) * sympy.tanh(y) - sympy.atan(x)
    assert sympy.simplify(expr - expected) == 0


def test_exact_matches_sympy_evaluation():
    p = Poisson("sin(3*x)*cosh(y/2) + log(2 + x*y) - 1/(1 + y**2)", [(0, 1), (0, 2)])
    pts = [(0.1, 0.7), (0.9, 1.9), (0.5, 0.0)]
    got = p.exact(torch.tensor([a for a, _ in pts], dtype=DT), torch.tensor([b for _, b in pts], dtype=DT))
    sx, sy = p.symbols
    ref = [float(p.u_expr.subs({sx: a, sy: b}).evalf(30)) for a, b in pts]
    torch.testing.assert_close(got, torch.tensor(ref, dtype=DT), rtol=1e-14, atol=1e-14)


def second_difference(fn, coords, axis, h):
    plus = [c + h if i == axis else c for i, c in enumerate(coords)]
    minus = [c - h if i == axis else c for i, c in enumerate(coords)]
    return (fn(*plus) - 2 * fn(*coords) + fn(*minus)) / h**2


def first_difference(fn, coords, axis, h):
    plus = [c + h if i == axis else c for i, c in enumerate(coords)]
    minus = [c - h if i == axis else c for i, c in enumerate(coords)]
    return (fn(*plus) - fn(*minus)) / (2 * h)


def random_points(domain, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [a + (b - a) * torch.rand(n, generator=g, dtype=DT) for a, b in domain]


CASES = [
    (Poisson, "sin(3*x)", [(0, 2)]),
    (Poisson, "sin(2*x)*cos(3*y) + x*y**2", [(0, 1), (0, 1)]),
    (Poisson, "exp(-x)*sin(y)*cos(2*z)", [(0, 1), (0, 1), (0, 1)]),
    (AllenCahn, "sin(2*x) + x/2", [(0, 2)]),
    (AllenCahn, "sin(x)*sin(2*y)", [(0, 2), (-1, 1)]),
]


@pytest.mark.parametrize("cls,solution,domain", CASES)
def test_source_equals_finite_differences(cls, solution, domain):
    p = cls(solution, domain)
    pts = random_points(domain)
    h = 1e-4
    lap = sum(second_difference(p.exact, pts, d, h) for d in range(len(domain)))
    u = p.exact(*pts)
    fd = lap + (u * (u * u - 1) if cls is AllenCahn else 0)
    torch.testing.assert_close(p.source(*pts), fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solution", ["sin(x - 3*t)", "exp(-t)*sin(2*x) + x*t"])
def test_advection_source_equals_finite_differences(solution):
    p = Advection(solution, beta=3.0, domain=[(0, 1), (0, 0.5)])
    x, t = random_points(p.domain)
    h = 1e-5
    fd = first_difference(p.exact, [x, t], 1, h) + 3.0 * first_difference(p.exact, [x, t], 0, h)
    torch.testing.assert_close(p.source(x, t), fd, rtol=1e-7, atol=1e-7)
    if solution == "sin(x - 3*t)":  # an exact transport solution has no source
        assert p.f_expr == 0


def test_problem_structure():
    p = Poisson("x*y*z", [(0, 1)] * 3)
    assert p.variables == ("x", "y", "z") and p.is_linear and p.dim == 3
    assert p.linear_terms == ((0, 2, 1.0), (1, 2, 1.0), (2, 2, 1.0))
    ac = AllenCahn("x", [(0, 1)])
    assert not ac.is_linear
    adv = Advection("sin(x - t)", beta=1.0, domain=[(0, 1), (0, 1)])
    assert adv.boundary_sides == ((True, True), (True, False))
    assert adv.source(torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)).shape == (3,)  # constant source broadcast
    with pytest.raises(ValueError, match="a < b"):
        Poisson("x", [(1, 0)])
    with pytest.raises(ValueError, match="1 to 3 intervals"):
        Poisson("x", [(0, 1)] * 4)
