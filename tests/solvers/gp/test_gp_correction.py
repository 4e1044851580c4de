"""GPPDESolver with a base (the paper's extra GP): the corrected equation against a dense
computation of the summed means, the summed prediction, and a slow part a locked kernel leaves."""

import math

import pytest
import torch

from sciml.solvers.gp import AllenCahn, GaussianSpectralMixture, GPPDESolver, Poisson, kron_dense
from sciml.solvers.gp.kronecker import KroneckerCholesky, NotPositiveDefiniteError
from sciml.solvers.gp.solver import _factorable_jitter

DT = torch.float64


@torch.no_grad()
def dense_mean_maps(s: GPPDESolver, order: int):
    """Per axis, the map from grid values to the GP mean's ``order``-th derivative at the grid points."""
    out = []
    for k, x in zip(s.kernels, s.axes):
        eye = torch.eye(x.numel(), dtype=DT)
        out.append(k.gram(x, x, order=order) @ torch.linalg.inv(k.gram(x, x) + s.jitter * eye))
    return out


@torch.no_grad()
def dense_operator(s: GPPDESolver):
    """The GP mean's linear operator on the grid, as one dense matrix."""
    second = dense_mean_maps(s, 2)
    eyes = [torch.eye(n, dtype=DT) for n in s.n_points]
    a = 0
    for axis, order, coeff in s.problem.linear_terms:
        assert order == 2
        a = a + coeff * kron_dense([second[axis] if k == axis else eyes[k] for k in range(len(eyes))])
    return a


def random_solver(problem, n_points, seed, **kwargs):
    torch.manual_seed(seed)
    s = GPPDESolver(problem, n_points, n_components=3, **kwargs)
    with torch.no_grad():
        s.u.normal_()
        for k in s.kernels:
            k.log_weight.normal_(0.0, 0.3)
    return s


def test_corrected_equation_is_the_equation_of_the_summed_means():
    """Allen-Cahn on a small 2D grid: the correction's residual and boundary gap are those of
    u_0 + v, with u_0 the base's mean (not its grid values) and the nonlinearity of the sum."""
    problem = AllenCahn("sin(2*x)*cos(y) + x*y", [(0, 2), (0, 1)])
    base = random_solver(problem, [7, 6], seed=0, jitter=1e-3)
    corr = GPPDESolver.correction(base, jitter=1e-4)
    with torch.no_grad():
        corr.u.normal_()
    coords = torch.meshgrid(*base.axes, indexing="ij")
    f, g = problem.source(*coords).reshape(-1), problem.exact(*coords).reshape(-1)
    mean_maps = dense_mean_maps(base, 0)
    u0 = kron_dense(mean_maps) @ base.u.detach().reshape(-1)  # the base's mean on the grid
    assert float((u0 - base.u.detach().reshape(-1)).abs().max()) > 1e-3  # the jitter makes it differ from U_0
    v = corr.u.detach().reshape(-1)
    total = dense_operator(base) @ base.u.detach().reshape(-1) + dense_operator(corr) @ v + problem.nonlinearity(u0 + v)
    mask = corr.interior_mask.reshape(-1)
    expected = (total - f)[mask]
    got = corr.residual().detach().reshape(-1)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))
    gap = (corr.u.detach() - corr.g)[corr.boundary_mask]
    assert torch.allclose(gap, (u0 + v - g)[~mask], rtol=1e-10, atol=1e-12)


def test_gauss_newton_stationary_point_is_one_of_the_total_loss():
    """The correction's U update for a nonlinear problem: the gradient of its loss in V vanishes."""
    problem = AllenCahn("sin(3*x) + 0.5*x", [(0, 2)])
    base = random_solver(problem, [24], seed=1, jitter=1e-4)
    corr = GPPDESolver.correction(base, jitter=1e-8)
    corr.solve_u(newton_max_iter=50)
    u = corr.u.detach().clone().requires_grad_(True)
    loss = corr.loss_terms(u)["loss"]
    (grad,) = torch.autograd.grad(loss, u)
    u_zero = torch.zeros_like(u).requires_grad_(True)
    (grad_zero,) = torch.autograd.grad(corr.loss_terms(u_zero)["loss"], u_zero)
    assert float(grad.norm()) < 1e-6 * float(grad_zero.norm())


def test_predict_is_the_sum_of_the_two_means():
    problem = Poisson("sin(5*x)*y + x", [(0, 1), (0, 2)])
    base = random_solver(problem, [8, 9], seed=2)
    corr = GPPDESolver.correction(base, jitter=1e-6)
    with torch.no_grad():
        corr.u.normal_()
    xs = [torch.linspace(-0.1, 1.1, 5, dtype=DT), torch.linspace(0.3, 1.7, 4, dtype=DT)]
    own = []
    for k, x, grid in zip(corr.kernels, xs, corr.axes):
        eye = torch.eye(grid.numel(), dtype=DT)
        own.append(k.gram(x, grid) @ torch.linalg.inv(k.gram(grid, grid) + corr.jitter * eye))
    expected = base.predict(*xs).reshape(-1) + kron_dense(own) @ corr.u.detach().reshape(-1)
    assert torch.allclose(corr.predict(*xs).reshape(-1), expected, rtol=1e-9, atol=1e-9)


def corrected_locked_fit(n: int):
    """u = sin(40x) - 2(x - 0.5)^2 on n points, the base kernel held at the sine's frequency (what the
    sin(500x) case's fit ends with): the base's and the corrected relative errors."""
    problem = Poisson("sin(40*x) - 2*(x - 0.5)**2", [(0, 1)])
    kernel = GaussianSpectralMixture(torch.tensor([40 / (2 * math.pi)], dtype=DT), rho=0.5)
    for p in kernel.parameters():
        p.requires_grad_(False)
    base = GPPDESolver(problem, [n], kernels=[kernel])
    base.solve_u()
    corr = GPPDESolver.correction(base)
    assert not corr.kernels[0].mu.requires_grad and float(corr.kernels[0].mu) == 0.0
    corr.fit(n_adam=0, u_update_every=1, n_lbfgs=100)
    corr.final_solve(1e-8)
    assert float(corr.kernels[0].mu) == 0.0  # held at zero frequency
    assert {n for n, _ in corr.named_parameters()} == {"u", "log_tau_residual", "log_tau_boundary",
                                                      "kernels.0.mu", "kernels.0.log_rho", "kernels.0.log_weight"}
    return base.relative_error(2001), corr.relative_error(2001)


def test_correction_recovers_the_slow_part_a_locked_kernel_leaves_and_converges():
    before, after = corrected_locked_fit(100)
    assert before > 0.1  # the locked kernel misses the quadratic
    assert after < 1e-4
    _, finer = corrected_locked_fit(200)
    assert finer < after / 4  # halving the spacing: at least second order


def test_base_must_solve_the_same_problem_on_the_same_grid():
    base = GPPDESolver(Poisson("sin(2*x)", [(0, 1)]), [12], n_components=2)
    with pytest.raises(ValueError, match="grid"):
        GPPDESolver(Poisson("sin(2*x)", [(0, 1)]), [13], n_components=2, base=base)
    with pytest.raises(ValueError, match="solves"):
        GPPDESolver(Poisson("sin(3*x)", [(0, 1)]), [12], n_components=2, base=base)
    with pytest.raises(TypeError, match="GPPDESolver"):
        GPPDESolver(Poisson("sin(2*x)", [(0, 1)]), [12], n_components=2, base=object())
    with pytest.raises(ValueError, match="length_scale"):
        GPPDESolver.correction(base, length_scale=0.0)


@pytest.mark.parametrize("n, rho", [(400, 1.0), (900, 1.0), (60, 3.0)])
def test_automatic_jitter_is_the_smallest_that_factors(n, rho):
    from sciml.solvers.gp import StudentTSpectralMixture

    kernel = StudentTSpectralMixture(torch.zeros(1, dtype=DT), rho=rho)
    h = 1.0 / (n - 1)
    jitter = _factorable_jitter([kernel], [n], [h])
    broad = StudentTSpectralMixture(torch.zeros(1, dtype=DT), rho=rho / 4)
    grams = [kernel.toeplitz_grams(n, h, order=0)[0], broad.toeplitz_grams(n, h, order=0)[0]]
    KroneckerCholesky(grams, jitter)  # factors
    if jitter > 1e-14:
        with pytest.raises(NotPositiveDefiniteError):
            KroneckerCholesky(grams, jitter / 10)
