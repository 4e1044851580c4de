r"""Kronecker-structured Gaussian-process PDE solver (GP-HM, Fang et al., ICLR 2024).

* :mod:`~sciml.solvers.gp.kernels`: 1D spectral-mixture kernels (Gaussian and
  Student-t/Matérn-5/2 envelopes) with closed-form derivatives and Toeplitz Gram
  matrices;
* :mod:`~sciml.solvers.gp.kronecker`: the Kronecker-factored prior (per-factor
  Cholesky, log density, axis-wise operators);
* :mod:`~sciml.solvers.gp.problems`: Poisson, Allen–Cahn and advection problems with
  manufactured solutions parsed safely from expressions;
* :mod:`~sciml.solvers.gp.solver`: :class:`GPPDESolver`, the loss, the exact
  U update for linear problems and the Adam / L-BFGS loop.
"""

from .kernels import GaussianSpectralMixture, SpectralMixture1D, StudentTSpectralMixture
from .kronecker import KroneckerCholesky, apply_along, kron_dense, kron_matmul
from .problems import ALLOWED_FUNCTIONS, Advection, AllenCahn, PDEProblem, Poisson, parse_expression
from .solver import GPPDESolver, USolveInfo

__all__ = [
    "SpectralMixture1D",
    "GaussianSpectralMixture",
    "StudentTSpectralMixture",
    "KroneckerCholesky",
    "apply_along",
    "kron_matmul",
    "kron_dense",
    "PDEProblem",
    "Poisson",
    "AllenCahn",
    "Advection",
    "parse_expression",
    "ALLOWED_FUNCTIONS",
    "GPPDESolver",
    "USolveInfo",
]
