"""The dense gpytorch GP of ``benchmarks/gp.py`` against GPPDESolver: the kernel mapping, the
kernel derivatives by autograd, and the exact U update (dense and Kronecker paths; Gauss–Newton
for Allen–Cahn; first-order axes and a face without data for advection) at the same
hyper-parameters."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from sciml.solvers.gp import Advection, AllenCahn, GaussianSpectralMixture, GPPDESolver, Poisson, kron_dense

DT = torch.float64
BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "gp.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_gp", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_kernel(seed: int, n_components: int = 5) -> GaussianSpectralMixture:
    """Frequencies of both signs and zero, scales and weights over several decades."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.empty(n_components, dtype=DT).uniform_(-3.0, 3.0, generator=gen)
    mu[0] = 0.0
    rho = torch.empty(n_components, dtype=DT).uniform_(-1.0, 1.5, generator=gen).exp()
    weight = torch.empty(n_components, dtype=DT).uniform_(-8.0, 1.0, generator=gen).exp()
    return GaussianSpectralMixture(mu, rho=rho, weight=weight)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_gpytorch_mixture_reproduces_our_kernel_and_derivatives(bench):
    ours = [random_kernel(0), random_kernel(1)]
    theirs = [bench.gpytorch_mixture(k, d) for d, k in enumerate(ours)]
    x = torch.linspace(-1.0, 2.0, 23, dtype=DT)
    y = torch.linspace(0.0, 1.5, 17, dtype=DT)
    for ours_k, lags, axis in ((ours[0], x, 0), (ours[1], y, 1)):
        reference = [v.detach() for v in ours_k(lags, order=2)]
        derived = bench.kernel_derivatives_at_lags(theirs[axis], axis, 2, lags, order=2)
        for order, (a, b) in enumerate(zip(derived, reference)):
            assert float((a - b).abs().max() / b.abs().max()) < 1e-12, f"axis {axis}, derivative {order}"
    # the product over the axes on the 2D grid is the Kronecker product of the 1D Gram matrices
    points = torch.cartesian_prod(x, y)
    product = (theirs[0] * theirs[1])(points, points).to_dense()
    reference = kron_dense([ours[0].gram(x).detach(), ours[1].gram(y).detach()])
    assert float((product - reference).abs().max() / reference.abs().max()) < 1e-12


def fitted_poisson_1d() -> GPPDESolver:
    s = GPPDESolver(Poisson("sin(5*x)", [(0, 2 * math.pi)]), [40], n_components=6)
    s.fit(n_adam=5, u_update_every=1, n_lbfgs=5)
    return s


def perturbed(s: GPPDESolver) -> GPPDESolver:
    """Weights and frequencies moved off their spread start, the residual precision raised by e²."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k in s.kernels:
            k.log_weight.add_(torch.randn(k.log_weight.shape, dtype=DT, generator=gen))
            k.mu.mul_(1.0 + 0.1 * torch.randn(k.mu.shape, dtype=DT, generator=gen))
        s.log_tau_residual.add_(2.0)
    return s


SOLVERS = {
    "poisson_1d_fitted": fitted_poisson_1d,
    "poisson_2d": lambda: perturbed(GPPDESolver(Poisson("sin(3*x)*y", [(0, 2), (0, 1)]), [12, 10], n_components=5)),
    "allen_cahn_2d": lambda: perturbed(
        GPPDESolver(AllenCahn("sin(2*x)*cos(y)", [(0, 2), (0, 1)]), [12, 10], n_components=4)
    ),
    "advection": lambda: perturbed(
        GPPDESolver(Advection("sin(2*x - 1.5*t)", beta=0.75, domain=[(0, 2), (0, 1)]), [12, 10], n_components=4)
    ),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_dense_gp_matches_exact_u_update(bench, name):
    """Our U update (dense QR; on the 2D grids also CG on the Kronecker path, from zero) against the dense
    gpytorch GP's, and the two posterior means on a staggered grid."""
    s = SOLVERS[name]()
    peer = bench.DenseCollocationGP.from_solver(s)
    u_dense = peer.solve()
    methods = ["dense"] if s.problem.dim == 1 else ["dense", "kronecker"]
    for method in methods:
        with torch.no_grad():
            s.u.zero_()
        s.solve_u(method=method, cg_tol=1e-13, cg_max_iter=2000, newton_tol=1e-13, newton_max_iter=50)
        assert relative(u_dense, s.u.detach()) < 1e-8, method
    axes = s.test_axes(15)
    assert relative(peer.predict(u_dense, axes), s.predict(*axes)) < 1e-8
    # not a trivial solution: it meets the Dirichlet data
    assert float((u_dense - s.g)[s.boundary_mask].abs().max()) < 1e-3 * float(s.g.abs().max())


def test_dense_gp_memory_estimate(bench):
    assert bench.dense_peer_gib([900]) < 0.1
    assert bench.dense_peer_gib([300, 300]) > 700
