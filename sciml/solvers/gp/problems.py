r"""PDE problems on boxes with manufactured solutions given as expressions.

A problem is :math:`\mathcal L u + n(u) = f` on a box
:math:`\prod_d [a_d, b_d]`, with

* a linear part that is a sum of single-axis derivatives,
  :math:`\mathcal L u = \sum_t c_t\, \partial^{k_t}_{x_{d_t}} u` (no mixed
  derivatives, so that it is a Kronecker *sum* of per-axis operators on a tensor
  grid), listed in :attr:`PDEProblem.linear_terms` as ``(axis, order, coeff)``;
* a pointwise nonlinearity :math:`n(u)` (zero for linear problems);
* Dirichlet data :math:`g = u` on the faces listed in
  :attr:`PDEProblem.boundary_sides`.

The exact solution is a string in the problem's variables (``x``, ``y``, ``z``;
``x, t`` for advection). It is parsed by :func:`parse_expression`, which walks
Python's syntax tree and builds the sympy expression itself — nothing is passed to
``eval`` or ``sympify`` — accepting numbers, the variables, ``pi``, ``+ - * / **``
and the functions in :data:`ALLOWED_FUNCTIONS`. The source :math:`f` is derived
symbolically, and :math:`u` and :math:`f` become torch callables.

Problems (GP-HM, Fang et al., ICLR 2024):

* :class:`Poisson`: :math:`\Delta u = f` in 1, 2 or 3 dimensions;
* :class:`AllenCahn`: :math:`\Delta u + u(u^2 - 1) = f`;
* :class:`Advection`: :math:`u_t + \beta u_x = f` on :math:`(x, t)`, with
  :math:`f = 0` when the given u solves the transport equation; data on
  :math:`x = a, x = b` and :math:`t = t_0`, none on the final time.
"""

from __future__ import annotations

import abc
import ast
import cmath
import math
from typing import Callable, Sequence, final

import sympy
import torch
from torch import Tensor

__all__ = ["ALLOWED_FUNCTIONS", "parse_expression", "PDEProblem", "Poisson", "AllenCahn", "Advection"]

ALLOWED_FUNCTIONS: dict[str, Callable] = {
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "exp": sympy.exp,
    "log": sympy.log,
    "sqrt": sympy.sqrt,
    "sinh": sympy.sinh,
    "cosh": sympy.cosh,
    "tanh": sympy.tanh,
    "atan": sympy.atan,
}
"""Functions an expression may call, by name; their torch counterparts are in ``_TORCH_FUNCTIONS``."""

_TORCH_FUNCTIONS: dict[type, Callable[[Tensor], Tensor]] = {
    sympy.sin: torch.sin,
    sympy.cos: torch.cos,
    sympy.tan: torch.tan,
    sympy.exp: torch.exp,
    sympy.log: torch.log,
    sympy.sinh: torch.sinh,
    sympy.cosh: torch.cosh,
    sympy.tanh: torch.tanh,
    sympy.atan: torch.atan,
}

_CONSTANTS = {"pi": sympy.pi}
_MAX_LENGTH = 2000
_MAX_EXPONENT = 64
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


def parse_expression(text: str, variables: Sequence[str], problem: str = "problem") -> sympy.Expr:
    r"""Parse an arithmetic expression in ``variables`` into sympy, safely.

    Parameters
    ----------
    text : str
        E.g. ``"sin(100*x) * sin(100*y)"``.
    variables : sequence of str
        The symbols the expression may use.
    problem : str
        Named in error messages.

    Raises
    ------
    ValueError
        On a syntax error, an unknown symbol, a function outside
        :data:`ALLOWED_FUNCTIONS`, any other construct (attributes, keywords,
        comparisons, ``^``, strings, ...), a constant exponent beyond ±64 or a text
        longer than 2000 characters. The message names the problem and the
        expression.

    Examples
    --------
    >>> parse_expression("sin(2*pi*x) + y**2", ["x", "y"])
    y**2 + sin(2*pi*x)
    >>> parse_expression("sin(q)", ["x"], "Poisson")
    Traceback (most recent call last):
    ...
    ValueError: Poisson: cannot use solution 'sin(q)': unknown symbol 'q' (allowed: x, pi)
    """

    def fail(reason: str) -> ValueError:
        return ValueError(f"{problem}: cannot use solution {text!r}: {reason}")

    if not isinstance(text, str):
        raise ValueError(f"{problem}: expected the solution as a string, got {type(text).__name__}")
    if len(text) > _MAX_LENGTH:
        raise fail(f"longer than {_MAX_LENGTH} characters")
    if not text.strip():
        raise fail("empty expression")
    symbols = {name: sympy.Symbol(name, real=True) for name in variables}
    allowed_names = ", ".join([*variables, *_CONSTANTS])
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise fail(f"syntax error ({err.msg}, column {err.offset})") from None
    except (RecursionError, MemoryError, ValueError):
        raise fail("expression too deeply nested or malformed") from None

    def build(node: ast.AST) -> sympy.Expr:
        if isinstance(node, ast.Expression):
            return build(node.body)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise fail(f"unsupported constant {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise fail(f"non-finite constant {value!r}")
            return sympy.Integer(value) if isinstance(value, int) else sympy.Float(value)
        if isinstance(node, ast.Name):
            if node.id in symbols:
                return symbols[node.id]
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            if node.id in ALLOWED_FUNCTIONS:
                raise fail(f"function {node.id!r} used without arguments")
            raise fail(f"unknown symbol {node.id!r} (allowed: {allowed_names})")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = build(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.BitXor):
                raise fail("'^' is not a power; use '**'")
            if type(node.op) not in _BINARY:
                raise fail(f"unsupported operator {type(node.op).__name__}")
            left, right = build(node.left), build(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, ast.Div):
                if right == 0:
                    raise fail("division by zero")
                return left / right
            if right.is_number:
                try:
                    exponent = complex(right)
                    if abs(exponent) > _MAX_EXPONENT:
                        raise fail(f"exponent {right} beyond ±{_MAX_EXPONENT}")
                    if left.is_number and not cmath.isfinite(complex(left) ** exponent):
                        raise OverflowError
                except (TypeError, OverflowError, ZeroDivisionError):
                    raise fail(f"constant power {ast.unparse(node)} overflows or is undefined") from None
            return left**right
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise fail("only plain function calls such as sin(x) are allowed")
            name = node.func.id
            if name not in ALLOWED_FUNCTIONS:
                raise fail(f"function {name!r} is not allowed (allowed: {', '.join(ALLOWED_FUNCTIONS)})")
            if node.keywords or len(node.args) != 1:
                raise fail(f"{name}() takes exactly one positional argument")
            return ALLOWED_FUNCTIONS[name](build(node.args[0]))
        raise fail(f"unsupported syntax {type(node).__name__}")

    try:
        expr = build(tree)
    except RecursionError:
        raise fail("expression too deeply nested") from None
    if expr.has(sympy.zoo, sympy.oo, sympy.nan, sympy.I):
        raise fail(f"expression evaluates to {expr}")
    return expr


def to_torch(expr: sympy.Expr, values: dict[sympy.Symbol, Tensor]) -> Tensor:
    r"""Evaluate a sympy expression built by :func:`parse_expression` (or its derivatives) in torch.

    ``values`` maps each free symbol to a tensor; the tensors must broadcast
    together. The result has their broadcast shape (a constant is expanded to it).
    """
    ref = next(iter(values.values()))
    shape = torch.broadcast_shapes(*(v.shape for v in values.values()))

    def ev(e: sympy.Expr) -> Tensor | float:
        if e.is_Symbol:
            return values[e]
        if e.is_Number or e.is_NumberSymbol:
            return float(e)
        if e.is_Add:
            out = ev(e.args[0])
            for a in e.args[1:]:
                out = out + ev(a)
            return out
        if e.is_Mul:
            out = ev(e.args[0])
            for a in e.args[1:]:
                out = out * ev(a)
            return out
        if e.is_Pow:
            base, exponent = ev(e.args[0]), ev(e.args[1])
            if isinstance(base, float) and isinstance(exponent, float):
                return base**exponent
            if isinstance(base, float):
                return torch.pow(torch.as_tensor(base, dtype=ref.dtype, device=ref.device), exponent)
            return torch.pow(base, exponent)
        fn = _TORCH_FUNCTIONS.get(e.func)
        if fn is not None:
            arg = ev(e.args[0])
            return fn(torch.as_tensor(arg, dtype=ref.dtype, device=ref.device))
        raise ValueError(f"cannot evaluate {e.func} in torch")

    out = ev(expr)
    out = torch.as_tensor(out, dtype=ref.dtype, device=ref.device)
    return out.expand(shape).clone()


class PDEProblem(abc.ABC):
    r"""Abstract PDE :math:`\sum_t c_t \partial^{k_t}_{x_{d_t}} u + n(u) = f` on a box with Dirichlet data.

    Parameters
    ----------
    solution : str
        Exact solution in :attr:`variables`, e.g. ``"sin(100*x)"``.
    domain : sequence of (float, float)
        ``(a_d, b_d)`` per axis, in the order of :attr:`variables`.

    Attributes
    ----------
    u_expr, f_expr : sympy.Expr
        Exact solution and the source derived from it.
    """

    def __init__(self, solution: str, domain: Sequence[tuple[float, float]]):
        name = type(self).__name__
        domain = tuple((float(a), float(b)) for a, b in domain)
        if len(domain) != len(self.variables):
            raise ValueError(
                f"{name}: expected a domain of {len(self.variables)} intervals for variables "
                f"{', '.join(self.variables)}, got {len(domain)}"
            )
        for v, (a, b) in zip(self.variables, domain):
            if not (math.isfinite(a) and math.isfinite(b) and a < b):
                raise ValueError(f"{name}: domain of {v} must be a finite interval (a, b) with a < b, got ({a}, {b})")
        self.domain = domain
        self.solution = solution
        self.u_expr = parse_expression(solution, self.variables, name)
        self.symbols = tuple(sympy.Symbol(v, real=True) for v in self.variables)
        f = sum(
            (_sympy_number(c) * sympy.diff(self.u_expr, self.symbols[axis], k) for axis, k, c in self.linear_terms),
            sympy.Integer(0),
        )
        self.f_expr = f + self._nonlinearity_sympy(self.u_expr)

    @property
    @abc.abstractmethod
    def variables(self) -> tuple[str, ...]:
        """Names of the coordinates, one per axis."""

    @property
    @abc.abstractmethod
    def linear_terms(self) -> tuple[tuple[int, int, float], ...]:
        r"""``(axis, order, coeff)`` per term :math:`c\,\partial^k_{x_d} u` of the linear part; order ∈ {1, 2}."""

    def _nonlinearity_sympy(self, u: sympy.Expr) -> sympy.Expr:
        return sympy.Integer(0)

    def nonlinearity(self, u: Tensor) -> Tensor | None:
        """Pointwise nonlinear term :math:`n(u)`; ``None`` for a linear problem."""
        return None

    def nonlinearity_derivative(self, u: Tensor) -> Tensor:
        """Pointwise derivative :math:`n'(u)` (by autograd unless a subclass gives it in closed form)."""
        with torch.enable_grad():
            v = u.detach().requires_grad_(True)
            return torch.autograd.grad(self.nonlinearity(v).sum(), v)[0]

    @property
    def is_linear(self) -> bool:
        return type(self).nonlinearity is PDEProblem.nonlinearity

    @property
    def dim(self) -> int:
        return len(self.variables)

    @property
    def boundary_sides(self) -> tuple[tuple[bool, bool], ...]:
        """Per axis, whether the lower and the upper face carry Dirichlet data (default: all faces)."""
        return tuple((True, True) for _ in self.variables)

    def _values(self, coords: Sequence[Tensor]) -> dict[sympy.Symbol, Tensor]:
        if len(coords) != self.dim:
            raise ValueError(f"{type(self).__name__}: expected {self.dim} coordinate tensors, got {len(coords)}")
        return dict(zip(self.symbols, coords))

    def exact(self, *coords: Tensor) -> Tensor:
        """Exact solution at broadcastable coordinate tensors (one per variable)."""
        return to_torch(self.u_expr, self._values(coords))

    def source(self, *coords: Tensor) -> Tensor:
        """Source :math:`f` at broadcastable coordinate tensors (one per variable)."""
        return to_torch(self.f_expr, self._values(coords))

    def __repr__(self) -> str:
        dom = ", ".join(f"{v} in [{a:g}, {b:g}]" for v, (a, b) in zip(self.variables, self.domain))
        return f"{type(self).__name__}(u = {self.solution}; {dom})"


def _sympy_number(c: float) -> sympy.Expr:
    """An integer-valued coefficient as a sympy Integer (so that ``1.0 * u_xx`` prints as ``u_xx``)."""
    c = float(c)
    return sympy.Integer(int(c)) if c.is_integer() else sympy.Float(c)


def _spatial_variables(problem: str, domain: Sequence) -> tuple[str, ...]:
    n = len(domain)
    if not 1 <= n <= 3:
        raise ValueError(f"{problem}: expected a domain of 1 to 3 intervals, got {n}")
    return ("x", "y", "z")[:n]


@final
class Poisson(PDEProblem):
    r""":math:`\Delta u = f` on a box in 1, 2 or 3 dimensions (variables ``x``, ``y``, ``z``).

    Examples
    --------
    >>> p = Poisson("sin(3*x)*y", [(0, 1), (0, 2)])
    >>> p.f_expr
    -9*y*sin(3*x)
    """

    def __init__(self, solution: str, domain: Sequence[tuple[float, float]]):
        self._variables = _spatial_variables("Poisson", domain)
        super().__init__(solution, domain)

    @property
    def variables(self) -> tuple[str, ...]:
        return self._variables

    @property
    def linear_terms(self) -> tuple[tuple[int, int, float], ...]:
        return tuple((d, 2, 1.0) for d in range(len(self._variables)))


@final
class AllenCahn(PDEProblem):
    r""":math:`\Delta u + u(u^2 - 1) = f` on a box in 1, 2 or 3 dimensions.

    Examples
    --------
    >>> AllenCahn("x", [(0, 1)]).f_expr
    x*(x**2 - 1)
    """

    def __init__(self, solution: str, domain: Sequence[tuple[float, float]]):
        self._variables = _spatial_variables("AllenCahn", domain)
        super().__init__(solution, domain)

    @property
    def variables(self) -> tuple[str, ...]:
        return self._variables

    @property
    def linear_terms(self) -> tuple[tuple[int, int, float], ...]:
        return tuple((d, 2, 1.0) for d in range(len(self._variables)))

    def _nonlinearity_sympy(self, u: sympy.Expr) -> sympy.Expr:
        return u * (u**2 - 1)

    def nonlinearity(self, u: Tensor) -> Tensor:
        return u * (u * u - 1.0)

    def nonlinearity_derivative(self, u: Tensor) -> Tensor:
        return 3.0 * u * u - 1.0


@final
class Advection(PDEProblem):
    r""":math:`u_t + \beta u_x = f` on :math:`[x_0, x_1] \times [t_0, t_1]`, axes ``(x, t)``.

    Dirichlet data on both x faces and the initial time; none on the final time,
    where the equation is collocated instead.

    Parameters
    ----------
    solution : str
        In ``x`` and ``t``, e.g. ``"sin(x - 200*t)"`` for :math:`\beta = 200`.
    beta : float
        Advection speed.
    domain : ((x0, x1), (t0, t1))

    Examples
    --------
    >>> Advection("sin(x - 2*t)", beta=2.0, domain=[(0, 1), (0, 1)]).f_expr
    0
    """

    def __init__(self, solution: str, beta: float, domain: Sequence[tuple[float, float]]):
        if len(domain) != 2:
            raise ValueError(f"Advection: expected a domain ((x0, x1), (t0, t1)), got {len(domain)} intervals")
        if not math.isfinite(beta):
            raise ValueError(f"Advection: beta must be finite (got {beta})")
        self.beta = float(beta)
        super().__init__(solution, domain)

    @property
    def variables(self) -> tuple[str, ...]:
        return ("x", "t")

    @property
    def linear_terms(self) -> tuple[tuple[int, int, float], ...]:
        return ((1, 1, 1.0), (0, 1, self.beta))

    @property
    def boundary_sides(self) -> tuple[tuple[bool, bool], ...]:
        return ((True, True), (True, False))
