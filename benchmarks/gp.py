r"""GP-HM on the shipped ``cases/gp_*.yaml`` problems against classical solvers and the paper.

Per case: our solver (the case kind ``gp_pde`` as shipped, or with the Adam / L-BFGS
budget cut by ``--adam`` / ``--lbfgs`` / ``--rounds``), timed in this process, and,
for Poisson and Allen–Cahn problems, two classical references on the same number of points per
axis, measured in the same run:

* ``fd2``: second-order finite differences on the uniform grid (scipy sparse LU);
* ``cheb``: Chebyshev collocation on Gauss–Lobatto points, solved by fast
  diagonalisation (per-axis eigendecomposition of the interior second-derivative
  matrix), error on the collocation nodes.

Allen–Cahn: the same discretisations, solved by Newton from u = 0 (Chebyshev: 1D only).

The paper's numbers (Fang et al., ICLR 2024; best of 20 checkpoints scored on test
data, 1e5 to 3e6 Adam steps) are quoted from DESIGN.md; ours are final iterates.

``dense GP``: a dense exact GP with the same kernel, in gpytorch, at the
hyper-parameters our solver ended with (:class:`DenseCollocationGP`). Gpytorch has no
likelihood that observes derivatives of the latent function, so the collocation
objective is written out here, but every covariance comes from gpytorch kernels:
per axis a ``SpectralMixtureKernel`` equal to our Gaussian mixture
(:func:`gpytorch_mixture`), its derivatives by autograd through it, the
:math:`N \times N` matrices of the whole grid formed densely (no Kronecker
structure), one dense Cholesky factorisation of the prior, the minimisation over U
by an SVD (Gauss–Newton for Allen–Cahn), the posterior mean on the test grid from
gpytorch's ``ProductKernel``. Reported: its relative L2 error on the collocation
nodes and on our test grid, its time to U, and :math:`\|U_{dense} - U_{ours}\| /
\|U_{ours}\|`. It needs about ``D + 10`` float64 :math:`N \times N` matrices; cases
past ``--dense-max-gib`` (default 4) are skipped (every 1D case fits; 2D at 300²
would need 720 GiB). Not for the Student-t family (gpytorch has no Matérn-envelope
spectral mixture), nor where the dense prior, whose smallest eigenvalue is about
:math:`\varepsilon^D`, is not positive definite in float64 (2D after a final solve at
a jitter of 1e-8 of the kernel scale, ``gp_poisson_2d_sin100``).

    python benchmarks/gp.py [--cases gp_poisson_1d_sin100 ...] [--adam N] [--lbfgs N]
                            [--rounds N] [--solution EXPR] [--n-points N [N ...]]
                            [--dense-max-gib G] [--threads 1]

``--solution`` replaces the manufactured solution of every case run (e.g.
``sin(80*x)*sin(120*y)`` with ``--cases gp_poisson_2d_sin100``), to check that a
configuration is not tuned to its one solution; ``--n-points`` replaces the grid
(one count per axis), e.g. to bring a 2D case within reach of the dense GP. Times:
wall and CPU (``time.process_time``) seconds of our solver; on a shared machine the
wall time is inflated by the load, the CPU time is not.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import functools
import math
import operator
import tempfile
import time
from pathlib import Path
from typing import Sequence

import gpytorch
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from sciml.cases import gp_pde
from sciml.config import load_case
from sciml.runs import Run
from sciml.solvers.gp import GaussianSpectralMixture, GPPDESolver, PDEProblem
from sciml.solvers.gp.kronecker import NotPositiveDefiniteError

CASES = Path(__file__).resolve().parents[1] / "cases"
PAPER = {  # DESIGN.md, "Kronecker GP PDE solver"
    "gp_poisson_1d_sin100": "4e-7 (GM, 1e5 steps)",
    "gp_poisson_1d_sin6cos100": "1.5e-6",
    "gp_poisson_1d_xsin200": "9e-7",
    "gp_poisson_1d_multiscale": "3.5e-4 (1e6 steps + low-freq GP)",
    "gp_poisson_1d_sin500": "4.2e-4 (1e6 steps + low-freq GP)",
    "gp_poisson_2d_sin100": "4.7e-6 (GM, 1e5 steps)",
    "gp_poisson_2d_sin100_400": "6.5e-5 (1e5 steps)",
    "gp_poisson_3d": "none (issue's goal: 1e-4 in 10 min)",
    "gp_allen_cahn_1d_sin100": "7.7e-7",
    "gp_allen_cahn_2d": "2.6e-3 (3e6 steps)",
    "gp_advection": "1.4e-4 (ST) / 1.3e-3 (GM), 1e6 steps",
}
DEFAULT = ["gp_poisson_1d_sin100", "gp_poisson_1d_sin6cos100", "gp_poisson_1d_xsin200", "gp_poisson_1d_multiscale",
           "gp_poisson_1d_sin500", "gp_allen_cahn_1d_sin100"]  # every shipped 1D case


def _second_difference(n: int, length: float) -> sp.csr_matrix:
    h = length / (n - 1)
    m = n - 2
    return sp.diags([np.ones(m - 1), -2 * np.ones(m), np.ones(m - 1)], [-1, 0, 1]) / h**2


def fd2_solve(problem) -> tuple[float, float]:
    """Second-order finite differences on the case's grid; (relative L2 error on the nodes, seconds)."""
    start = time.perf_counter()
    n = problem["n"]
    domain = problem["problem"].domain
    axes = [np.linspace(a, b, k) for (a, b), k in zip(domain, n)]
    grids = np.meshgrid(*axes, indexing="ij")
    exact = problem["problem"].exact(*[torch.as_tensor(g) for g in grids]).numpy()
    f = problem["problem"].source(*[torch.as_tensor(g) for g in grids]).numpy()
    interior = tuple(slice(1, k - 1) for k in n)
    eyes = [sp.identity(k - 2) for k in n]
    lap = sp.csr_matrix((int(np.prod([k - 2 for k in n])),) * 2)
    for d, ((a, b), k) in enumerate(zip(domain, n)):
        mats = [eyes[e] if e != d else _second_difference(k, b - a) for e in range(len(n))]
        term = mats[0]
        for m in mats[1:]:
            term = sp.kron(term, m)
        lap = lap + term
    # move the Dirichlet data to the right-hand side: rhs = f - L_full g restricted
    g = exact.copy()
    g[interior] = 0.0
    lg = np.zeros_like(g)
    for d, ((a, b), k) in enumerate(zip(domain, n)):
        h = (b - a) / (k - 1)
        lg += (np.roll(g, 1, d) - 2 * g + np.roll(g, -1, d)) / h**2
    rhs = (f - lg)[interior].reshape(-1)
    u = g.copy()
    u[interior] = _newton(problem["problem"], lap.tocsc(), rhs, spla.spsolve).reshape([k - 2 for k in n])
    err = float(np.linalg.norm(u - exact) / np.linalg.norm(exact))
    return err, time.perf_counter() - start


def _newton(pde, op, rhs: np.ndarray, solve, tol: float = 1e-12, max_iter: int = 50) -> np.ndarray:
    """``op u + n(u) = rhs`` for the problem's pointwise nonlinearity n (none: one solve), Newton from u = 0."""
    if pde.is_linear:
        return solve(op, rhs)
    diag = sp.diags if sp.issparse(op) else np.diag
    u = np.zeros_like(rhs)
    for _ in range(max_iter):
        t = torch.as_tensor(u)
        r = op @ u + pde.nonlinearity(t).numpy() - rhs
        du = solve(op + diag(pde.nonlinearity_derivative(t).numpy()), -r)
        u = u + du
        if np.linalg.norm(du) <= tol * max(np.linalg.norm(u), 1e-300):
            break
    return u


def _cheb(n: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Lobatto points on [a, b] and the second-derivative matrix (Trefethen, Spectral Methods in MATLAB)."""
    k = np.arange(n)
    x = np.cos(np.pi * k / (n - 1))
    c = np.where((k == 0) | (k == n - 1), 2.0, 1.0) * (-1.0) ** k
    dx = x[:, None] - x[None, :]
    d = np.outer(c, 1 / c) / (dx + np.eye(n))
    d -= np.diag(d.sum(1))
    scale = 2.0 / (b - a)
    return a + (x + 1) * (b - a) / 2, (d @ d) * scale**2


def cheb_solve(problem) -> tuple[float, float]:
    """Chebyshev collocation by fast diagonalisation (Newton with dense solves for a 1D
    nonlinear problem); (relative L2 error on the nodes, seconds)."""
    start = time.perf_counter()
    n, domain, pde = problem["n"], problem["problem"].domain, problem["problem"]
    pts, d2 = zip(*[_cheb(k, a, b) for (a, b), k in zip(domain, n)])
    grids = np.meshgrid(*pts, indexing="ij")
    exact = pde.exact(*[torch.as_tensor(g) for g in grids]).numpy()
    f = pde.source(*[torch.as_tensor(g) for g in grids]).numpy()
    interior = tuple(slice(1, k - 1) for k in n)
    g = exact.copy()
    g[interior] = 0.0
    lg = sum(np.moveaxis(np.tensordot(m, g, axes=([1], [d])), 0, d) for d, m in enumerate(d2))
    rhs = (f - lg)[interior]
    if not pde.is_linear:
        if len(n) != 1:
            return float("nan"), 0.0
        u = g.copy()
        u[interior] = _newton(pde, d2[0][1:-1, 1:-1], rhs, np.linalg.solve)
        return float(np.linalg.norm(u - exact) / np.linalg.norm(exact)), time.perf_counter() - start
    eig = [np.linalg.eig(m[1:-1, 1:-1]) for m in d2]
    z = rhs
    for d, (lam, v) in enumerate(eig):
        z = np.moveaxis(np.tensordot(np.linalg.inv(v), z, axes=([1], [d])), 0, d)
    total = eig[0][0].real
    for lam, _ in eig[1:]:
        total = total[..., None] + lam.real
    z = z / total
    for d, (lam, v) in enumerate(eig):
        z = np.moveaxis(np.tensordot(v, z, axes=([1], [d])), 0, d)
    u = g.copy()
    u[interior] = z.real
    return float(np.linalg.norm(u - exact) / np.linalg.norm(exact)), time.perf_counter() - start


def gpytorch_mixture(kernel: GaussianSpectralMixture, axis: int = 0) -> gpytorch.kernels.SpectralMixtureKernel:
    r"""Our Gaussian spectral mixture as gpytorch's ``SpectralMixtureKernel`` on input column ``axis``.

    Ours: :math:`k(\tau) = \sum_q w_q e^{-\rho_q^2 \tau^2} \cos(2\pi\mu_q \tau)`; gpytorch's:
    :math:`\sum_q w_q e^{-2\pi^2 s_q^2 \tau^2} \cos(2\pi m_q \tau)` with ``mixture_weights``
    :math:`w_q`, ``mixture_scales`` :math:`s_q = \rho_q / (\sqrt2\pi)` and ``mixture_means``
    :math:`m_q = |\mu_q|` (the cosine is even; gpytorch keeps the means positive). Float64, no
    gradients in its parameters.
    """
    out = gpytorch.kernels.SpectralMixtureKernel(
        num_mixtures=kernel.n_components, ard_num_dims=1, active_dims=(axis,)
    ).double()
    with torch.no_grad():
        out.mixture_weights = kernel.weight.detach()
        out.mixture_means = kernel.mu.detach().abs().reshape(out.mixture_means.shape)
        out.mixture_scales = (kernel.rho.detach() / (math.sqrt(2.0) * math.pi)).reshape(out.mixture_scales.shape)
    return out.requires_grad_(False)


def kernel_derivatives_at_lags(kernel: gpytorch.kernels.Kernel, axis: int, dim: int, lags: Tensor,
                               order: int) -> list[Tensor]:
    r""":math:`[k, k', \dots, k^{(order)}]` at ``lags`` (shape ``(L,)``), by autograd through ``kernel``.

    ``kernel`` acts on input column ``axis`` of ``dim``; it is evaluated between the points
    with ``lags`` in that column (zeros elsewhere) and the origin, so entry :math:`l` depends on
    :math:`\tau_l` alone and the gradient of the sum is the elementwise derivative
    :math:`\partial_x k(x, x')` at :math:`x - x' = \tau_l`. Returns ``order + 1`` tensors of shape ``(L,)``.
    """
    x = torch.zeros(lags.numel(), dim, dtype=lags.dtype).index_copy(1, torch.tensor([axis]), lags[:, None])
    x.requires_grad_(True)
    values = [kernel(x, torch.zeros(1, dim, dtype=lags.dtype)).to_dense()[:, 0]]
    for _ in range(order):
        values.append(torch.autograd.grad(values[-1].sum(), x, create_graph=True)[0][:, axis])
    return [v.detach() for v in values]


def dense_peer_gib(n_points: Sequence[int]) -> float:
    r"""Peak memory of :class:`DenseCollocationGP` on this grid, GiB: ``D + 10`` float64 :math:`N \times N`
    matrices (measured peaks, 2D Poisson and Allen–Cahn at 40² and 60²: 9 to 12 above the process's
    memory before; the per-axis factors and lag indices, the prior, its Cholesky factor, the
    cross-covariance and its whitened form, :math:`M` and the SVD's factors and workspace)."""
    n = math.prod(n_points)
    return (len(n_points) + 10) * 8 * n * n / 2**30


class DenseCollocationGP:
    r"""The collocation GP of :class:`~sciml.solvers.gp.GPPDESolver`, posed densely with gpytorch kernels.

    At fixed hyper-parameters the solver minimises over the values :math:`U` on the grid
    (:math:`N` points, flattened in C order)

    .. math::

        \tfrac12 U^T K^{-1} U + \tfrac12 \lambda_b\tau_b \|U_B - g_B\|^2
          + \tfrac12 \tau_r \|(D K^{-1} U + n(U) - f)_I\|^2,

    :math:`I` the collocation points, :math:`B` the Dirichlet points. Here every matrix is
    an explicit :math:`N \times N` array built from gpytorch kernels:

    * the prior :math:`K_{ij} = \prod_d \big(k_d(x_{id} - x_{jd}) + \varepsilon\,[x_{id} = x_{jd}]\big)`,
      :math:`k_d` = :func:`gpytorch_mixture` of axis d: the solver's jitter
      :math:`\varepsilon` belongs to each axis' factor, a white-noise term per axis;
    * the cross-covariance of the operator :math:`\mathcal L = \sum_t c_t \partial^{k_t}_{x_{d_t}}`
      with the field, :math:`D = \sum_t c_t\, k_{d_t}^{(k_t)} \odot \prod_{e \ne d_t}(\text{factor } e)`,
      the derivatives of gpytorch's kernel by autograd (:func:`kernel_derivatives_at_lags`)
      at the grid's lags; the white noise has no derivative, and like the solver the
      differentiated axis keeps only the smooth kernel. The GP mean's derivative on the
      grid is then :math:`\mathcal L\,\mathbb E[u] = D K^{-1} U`.

    The minimiser: with the dense Cholesky factor :math:`K = L L^T` and :math:`U = L V` the
    objective is :math:`\tfrac12\|V\|^2 + \tfrac12\|M V - W^{1/2} h\|^2`,
    :math:`M = W^{1/2}\,[(D L^{-T})_I;\ L_B]`, :math:`h = (f_I, g_B)`,
    :math:`W = \mathrm{diag}(\tau_r \text{ on } I, \lambda_b\tau_b \text{ on } B)`, solved through
    the SVD :math:`M = \sum_i s_i a_i b_i^T`: :math:`V = \sum_i s_i / (1 + s_i^2)\,(a_i^T W^{1/2} h)\, b_i`.
    A pointwise nonlinearity :math:`n` (Allen–Cahn): Gauss–Newton from :math:`U = 0`,
    :math:`n` linearised at the current :math:`U`, steps halved until the objective decreases.

    Parameters
    ----------
    problem : PDEProblem
    n_points : sequence of int
        Grid points per axis, boundary included.
    kernels : sequence of GaussianSpectralMixture
        One per axis; their parameters are copied into gpytorch kernels.
    jitter, tau_residual, tau_boundary, boundary_weight : float
        :math:`\varepsilon, \tau_r, \tau_b, \lambda_b`.

    Raises
    ------
    NotPositiveDefiniteError
        When the dense prior's Cholesky factorisation fails: its smallest eigenvalue is about
        :math:`\varepsilon^D`, below float64's resolution of :math:`\|K\|` for a small jitter
        in 2D (the solver factorises each axis, down to :math:`\varepsilon` only).
    """

    def __init__(self, problem: PDEProblem, n_points: Sequence[int], kernels: Sequence[GaussianSpectralMixture],
                 jitter: float, tau_residual: float, tau_boundary: float, boundary_weight: float):
        if len(kernels) != problem.dim or len(n_points) != problem.dim:
            raise ValueError(f"expected {problem.dim} kernels and point counts, got {len(kernels)} and {len(n_points)}")
        if not all(isinstance(k, GaussianSpectralMixture) for k in kernels):
            raise ValueError(f"expected GaussianSpectralMixture kernels, got {[type(k).__name__ for k in kernels]}")
        dim, dt = problem.dim, torch.float64
        self.problem = problem
        self.n_points = tuple(n_points)
        self.axes = [torch.linspace(a, b, n, dtype=dt) for (a, b), n in zip(problem.domain, n_points)]
        index = torch.cartesian_prod(*[torch.arange(n) for n in n_points]).reshape(-1, dim)  # (N, D), C order
        self.points = torch.stack([x[index[:, d]] for d, x in enumerate(self.axes)], dim=1)
        self.kernels = [gpytorch_mixture(k, d) for d, k in enumerate(kernels)]
        self.smooth = functools.reduce(operator.mul, self.kernels)  # gpytorch ProductKernel for D > 1

        orders: dict[int, int] = {}
        for axis, order, _ in problem.linear_terms:
            orders[axis] = max(order, orders.get(axis, 0))
        lag_values, factors = [], []  # per axis: the kernel and its derivatives at the lags; its N x N factor
        for d, (n, (a, b)) in enumerate(zip(n_points, problem.domain)):
            lags = (torch.arange(2 * n - 1, dtype=dt) - (n - 1)) * ((b - a) / (n - 1))
            lag_values.append(kernel_derivatives_at_lags(self.kernels[d], d, dim, lags, orders.get(d, 0)))
            lag_index = self._lag_index(index, d)
            factors.append(lag_values[d][0][lag_index] + jitter * (lag_index == n - 1))
        cross = torch.zeros(len(index), len(index), dtype=dt)
        for axis, order, coeff in problem.linear_terms:
            others = [f for e, f in enumerate(factors) if e != axis]
            derivative = lag_values[axis][order][self._lag_index(index, axis)]
            cross += coeff * functools.reduce(operator.mul, others, derivative)
        prior = functools.reduce(operator.mul, factors)
        del factors

        chol, info = torch.linalg.cholesky_ex(prior)
        if int(info) != 0:
            raise NotPositiveDefiniteError(f"the dense prior (N = {len(index)}, jitter {jitter:g}) is not positive "
                                           f"definite in float64: Cholesky failed at column {int(info)}")
        del prior
        self.chol = chol
        # D L^{-T}: the operator applied to U = L V
        self.whitened_cross = torch.linalg.solve_triangular(chol, cross.mT, upper=False).mT

        lower = torch.tensor([1 if lo else 0 for lo, _ in problem.boundary_sides])
        upper = torch.tensor([n - 2 if hi else n - 1 for (_, hi), n in zip(problem.boundary_sides, n_points)])
        self.interior = ((index >= lower) & (index <= upper)).all(dim=1)
        grids = torch.meshgrid(*self.axes, indexing="ij")
        self.f = problem.source(*grids).reshape(-1)
        self.g = problem.exact(*grids).reshape(-1)
        w = torch.where(self.interior, torch.tensor(tau_residual, dtype=dt),
                        torch.tensor(boundary_weight * tau_boundary, dtype=dt))
        self.w_sqrt = w.sqrt()

    def _lag_index(self, index: Tensor, axis: int) -> Tensor:
        """``(N, N)``: the position of :math:`x_{i,axis} - x_{j,axis}` among the ``2 n - 1`` lags of the axis."""
        return index[:, None, axis] - index[None, :, axis] + (self.n_points[axis] - 1)

    @classmethod
    def from_solver(cls, solver: GPPDESolver) -> "DenseCollocationGP":
        """The dense GP at ``solver``'s current kernels, jitter, precisions and boundary weight."""
        return cls(solver.problem, solver.n_points, list(solver.kernels), solver.jitter,
                   float(solver.log_tau_residual.detach().exp()), float(solver.log_tau_boundary.detach().exp()),
                   solver.boundary_weight)

    def _nonlinearity(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`n(U)` and :math:`n'(U)` on the collocation points, zero elsewhere."""
        zero = torch.zeros_like(u)
        if self.problem.is_linear:
            return zero, zero
        return (torch.where(self.interior, self.problem.nonlinearity(u), zero),
                torch.where(self.interior, self.problem.nonlinearity_derivative(u), zero))

    def objective(self, v: Tensor) -> float:
        r"""The objective above at :math:`U = L V` (``v`` of shape ``(N,)``), constants dropped."""
        u = self.chol @ v
        residual = torch.where(self.interior, self.whitened_cross @ v + self._nonlinearity(u)[0] - self.f, u - self.g)
        return float(0.5 * v.square().sum() + 0.5 * (self.w_sqrt * residual).square().sum())

    def solve(self, *, tol: float = 1e-12, max_iter: int = 50) -> Tensor:
        """The minimiser :math:`U`, shape ``n_points``: one SVD solve (linear), or Gauss–Newton from
        zero until a step is below ``tol`` relative to :math:`U` or no longer decreases the objective."""
        v = torch.zeros(self.chol.shape[0], dtype=self.chol.dtype)
        loss = self.objective(v)
        for _ in range(max_iter):
            u = self.chol @ v
            value, slope = self._nonlinearity(u)
            m = self.w_sqrt[:, None] * torch.where(self.interior[:, None],
                                                   self.whitened_cross + slope[:, None] * self.chol, self.chol)
            h = torch.where(self.interior, self.f - value + slope * u, self.g)
            left, s, right_t = torch.linalg.svd(m, full_matrices=False)
            target = right_t.mT @ (s / (1.0 + s * s) * (left.mT @ (self.w_sqrt * h)))
            if self.problem.is_linear:
                return (self.chol @ target).reshape(self.n_points)
            step, alpha = target - v, 1.0
            while alpha >= 1e-6 and self.objective(v + alpha * step) > loss:
                alpha *= 0.5
            trial = self.objective(v + alpha * step)
            if trial > loss:
                break
            v, loss = v + alpha * step, trial
            if float((self.chol @ (alpha * step)).norm()) <= tol * float((self.chol @ v).norm()):
                break
        return (self.chol @ v).reshape(self.n_points)

    @torch.no_grad()
    def predict(self, u: Tensor, axes: Sequence[Tensor]) -> Tensor:
        r"""Posterior mean :math:`K(X^*, X) K^{-1} U` on the tensor grid of ``axes`` (shapes ``(M_d,)``).

        :math:`K(X^*, X)`: gpytorch's product of the smooth kernels (the white noise vanishes
        between distinct points), evaluated on :math:`N / 4Q` test points at a time (gpytorch's
        spectral mixture holds a few :math:`Q \times M \times N` arrays). Returns ``(M_1, ..., M_D)``.
        """
        weights = torch.cholesky_solve(u.reshape(-1, 1), self.chol)[:, 0]
        test = torch.cartesian_prod(*axes).reshape(-1, len(axes))
        block = max(1, len(weights) // (4 * max(k.num_mixtures for k in self.kernels)))
        out = torch.cat([self.smooth(test[i:i + block], self.points).to_dense() @ weights
                         for i in range(0, test.shape[0], block)])
        return out.reshape([x.numel() for x in axes])


def dense_peer(m: dict, max_gib: float) -> tuple[str, str]:
    """The dense gpytorch GP at the hyper-parameters our solver ended with, as table cells:
    (its relative L2 error on the nodes / on our test grid / seconds to U, ``|U_dense - U_ours| / |U_ours|``)."""
    solver = m["solver"].base or m["solver"]  # with a correction: the main GP's
    if not all(isinstance(k, GaussianSpectralMixture) for k in solver.kernels):
        return "n/a (Student-t kernel)", "—"
    need = dense_peer_gib(solver.n_points)
    if need > max_gib:
        return f"n/a (N×N needs {need:.3g} GiB)", "—"
    start = time.perf_counter()
    try:
        peer = DenseCollocationGP.from_solver(solver)
    except NotPositiveDefiniteError:
        return f"n/a (dense K not positive definite at jitter {solver.jitter:.2g})", "—"
    u = peer.solve()
    seconds = time.perf_counter() - start
    exact = peer.g.reshape(peer.n_points)
    axes = solver.test_axes(m["test_points"])
    exact_test = solver.problem.exact(*torch.meshgrid(*axes, indexing="ij"))
    nodes = float((u - exact).norm() / exact.norm())
    test = float((peer.predict(u, axes) - exact_test).norm() / exact_test.norm())
    ours_u = solver.u.detach()
    diff = float((u - ours_u).norm() / ours_u.norm())
    return f"{nodes:.2e} / {test:.2e} / {seconds:.2f} s", f"{diff:.1e}"


def ours(name: str, args) -> dict:
    """Run case ``name`` (budget and solution as ``args`` ask) through :func:`gp_pde.run`; its metrics, plus
    ``solver``: the solver as the run left it (:func:`restored_solver`), ``problem``, ``n`` and ``budget``."""
    cfg = load_case(CASES / f"{name}.yaml").config
    opt = cfg.optimiser
    adam = opt.adam.model_copy(update={"steps": args.adam}) if args.adam is not None else opt.adam
    lbfgs = opt.lbfgs
    if args.lbfgs is not None:
        lbfgs = lbfgs.model_copy(update={"iterations": args.lbfgs})
    if args.rounds is not None:
        lbfgs = lbfgs.model_copy(update={"rounds": args.rounds})
    update = {
        "optimiser": opt.model_copy(update={"adam": adam, "lbfgs": lbfgs}),
        "output": cfg.output.model_copy(update={"plots": False, "paraview": False}),
    }
    if args.solution is not None:
        update["problem"] = cfg.problem.model_copy(update={"solution": args.solution})
    if args.n_points is not None:
        if len(args.n_points) != len(cfg.n_points):
            raise ValueError(f"{name}: --n-points needs {len(cfg.n_points)} counts, got {len(args.n_points)}")
        update["n_points"] = list(args.n_points)
    cfg = cfg.model_copy(update=update)
    with tempfile.TemporaryDirectory() as folder:
        run = Run(folder)
        cpu = time.process_time()
        metrics = gp_pde.run(cfg, run)
        metrics["cpu_time_s"] = time.process_time() - cpu
        metrics["solver"] = restored_solver(cfg, run)
        run.close()
    restored_error = metrics["solver"].relative_error(metrics["test_points"])
    if not math.isclose(restored_error, metrics["relative_l2"], rel_tol=1e-6):
        raise RuntimeError(f"{name}: the restored solver's error {restored_error:.6e} is not the run's "
                           f"{metrics['relative_l2']:.6e}")
    metrics["budget"] = f"Adam {adam.steps} + {lbfgs.rounds}x L-BFGS-B {lbfgs.iterations}"
    if cfg.correction is not None:
        c = cfg.correction
        metrics["budget"] += (f"; correction: Adam {c.adam.steps} + {c.lbfgs.rounds}x L-BFGS-B {c.lbfgs.iterations} "
                              f"(main alone {metrics['correction']['relative_l2_before']:.1e})")
    metrics["problem"] = gp_pde.build_problem(cfg)
    metrics["n"] = list(cfg.n_points)
    return metrics


def restored_solver(cfg, run: Run) -> GPPDESolver:
    """The solver :func:`gp_pde.run` ended with: rebuilt from the run's last checkpoint (written after
    every phase), then the steps the case takes after its phases and does not checkpoint (the U solve
    of a run without phases, the final solve at a lowered jitter); with a correction, the corrected
    solver (its ``base`` the main one)."""
    solver = gp_pde.build_solver(cfg)
    checkpoint = run.load_checkpoint()
    if checkpoint is not None:
        solver.load_state_dict(checkpoint["state"]["solver"])
    gp_pde.after_phases(solver, cfg)
    if cfg.correction is None:
        return solver
    corrected = gp_pde.build_correction(solver, cfg)
    corrected.load_state_dict(checkpoint["state"]["correction"])
    corrected.final_solve(cfg.correction.final_jitter)
    return corrected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=DEFAULT)
    parser.add_argument("--adam", type=int, default=None)
    parser.add_argument("--lbfgs", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--solution", default=None, help="replace each case's exact solution")
    parser.add_argument("--n-points", type=int, nargs="+", default=None,
                        help="replace each case's grid (points per axis, boundary included)")
    parser.add_argument("--dense-max-gib", type=float, default=4.0,
                        help="skip the dense gpytorch GP where its N x N matrices would need more memory")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.cases:
        m = ours(name, args)
        if type(m["problem"]).__name__ in ("Poisson", "AllenCahn"):
            fd, t_fd = fd2_solve(m)
            ch, t_ch = cheb_solve(m)
            cheb = "n/a (Newton: 1D only)" if math.isnan(ch) else f"{ch:.1e} / {t_ch:.2f} s"
            ref = (f"{fd:.1e} / {t_fd:.2f} s", cheb, f"{m['relative_l2'] / fd:.2g}")
        else:
            ref = ("n/a (advection)", "n/a", "—")
        dense = dense_peer(m, args.dense_max_gib)
        label = name if args.solution is None else f"{name}, u = {args.solution}"
        rows.append(
            (label, "x".join(map(str, m["n"])), m["budget"], f"{m['relative_l2']:.2e}",
             f"{m['wall_time_s']:.1f} / {m['cpu_time_s']:.1f}", str(m["iterations"]), *ref, *dense,
             PAPER.get(name, "—") if args.solution is None else "—")
        )
    head = ("case", "grid", "ours: budget", "ours: rel. L2", "ours: wall / CPU s", "evals", "FD2: err / time",
            "Chebyshev: err / time", "ours / FD2", "dense GP: err nodes / test / time", "dense vs ours: ΔU",
            "paper")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\n{args.threads} torch thread(s); errors: relative L2, ours on a staggered test grid, FD2 and "
          "Chebyshev on their own nodes, the dense GP on the collocation nodes and on our test grid. "
          "Dense GP: gpytorch kernels at our final hyper-parameters, time to U; ΔU = |U_dense - U_ours| / |U_ours|; "
          "with a correction (the paper's extra GP), of the main GP alone.")


if __name__ == "__main__":
    main()
