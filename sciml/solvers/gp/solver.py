r"""Kronecker-structured Gaussian-process PDE solver (GP-HM).

Fang, Cooley, Long, Li, Kirby, Zhe, "Solving High Frequency and Multi-Scale PDEs
with Gaussian Processes", ICLR 2024.

The unknowns are the solution values :math:`U` on a tensor grid (boundary points
included), the per-dimension spectral-mixture kernel parameters and two precisions,
:math:`\tau_r` for the equation and :math:`\tau_b` for the boundary data. The GP
mean's derivatives act along one axis each, :math:`U_{xx} = K_1'' K_1^{-1} U`, so
a linear operator :math:`\mathcal L = \sum_t c_t \partial^{k_t}_{x_{d_t}}` becomes
the Kronecker sum :math:`A = \bigoplus_d E_d` of per-axis matrices
:math:`E_d = \sum_{t: d_t = d} c_t K_d^{(k_t)} K_d^{-1}`. The loss is

.. math::

    \mathcal J = -\log \mathcal N(U \mid 0, \textstyle\bigotimes_d K_d)
      - \lambda_b \sum_{i \in B} \log \mathcal N(g_i \mid U_i, \tau_b^{-1})
      - \sum_{i \in I} \log \mathcal N(0 \mid (AU + n(U) - f)_i, \tau_r^{-1}),

with :math:`I` the collocation points (the interior, plus faces without data)
and :math:`B` the rest of the grid, where Dirichlet data :math:`g` is given. (The authors'
code also enforces the equation at the boundary points, i.e. :math:`I` = the whole grid;
here a boundary point carries its data only. With fixed kernels the difference moved the
error both ways, 1.8e-6 -> 1.0e-6 on ``sin(20x)`` and 1.7e-3 -> 2.2e-3 on a multi-scale
solution: a reviewer's scratch check, twenty-second session.)

Linear problems (:math:`n \equiv 0`): for fixed kernels and precisions
:math:`\mathcal J` is quadratic in :math:`U`, and :meth:`GPPDESolver.solve_u`
returns its exact minimiser. Write the collocation map :math:`C U = (AU)_I` on
:math:`I` and :math:`U_B` on :math:`B`, :math:`h = (f_I, g_B)`,
:math:`W = \mathrm{diag}(\tau_r \text{ on } I,\ \lambda_b\tau_b \text{ on } B)`, and
whiten, :math:`U = R V` with :math:`R R^T = \bigotimes_d (K_d + \varepsilon I)`:

.. math::

    \min_V\ \tfrac12 \|V\|^2 + \tfrac12 \|M V - W^{1/2} h\|^2, \qquad M = W^{1/2} C R .

This ridge problem is solved without forming the normal matrix
:math:`K^{-1} + C^T W C`, whose condition number (:math:`\sim 10^{16}` once the
precisions have grown) leaves nothing of double precision:

* dense (``numel <= dense_limit``, every 1D problem of interest): QR least squares
  on the stacked matrix :math:`[M; I]`, :math:`R` the Kronecker Cholesky factor;
* Kronecker (larger grids): conjugate gradients on :math:`(I + M^T M) V = M^T
  W^{1/2} h` with :math:`R = \otimes_d Q_d S_d^{1/2}` from per-axis
  eigendecompositions, so that every product is a sequence of axis-wise matmuls,
  a warm start from the current :math:`U` and, by default, a fast-diagonalisation
  preconditioner (:class:`_FastDiagonalisationPreconditioner`): the collocation
  block of the normal matrix is a Kronecker product plus the square of a Kronecker
  sum, inverted approximately by per-axis eigendecompositions (2D Poisson, 24²:
  21 iterations against 468 with the exact Jacobi preconditioner of
  :class:`_WhitenedNormalEquations`; 42 at 300² for ``sin(100x) sin(100y)``; with a
  first-order axis the Dirichlet values are also lifted into the interior: advection
  ``sin(x - 20t)`` at 24 x 20, 2–9 iterations against 717–747 with Jacobi).

Why not a direct solve by per-axis eigendecompositions: on the full grid,
:math:`E_d = G_d (K_d + \varepsilon I)^{-1} = T_d \Lambda_d T_d^{-1}` from the
generalized problem :math:`G_d t = \lambda (K_d + \varepsilon I) t`, and the prior
becomes :math:`\|V\|^2` with :math:`U = (\otimes_d T_d) V`; but the residual
likelihood is white, :math:`\|(\otimes_d T_d)\Lambda_\oplus V - f\|^2`, and
:math:`T_d^T T_d` is not diagonal (three per-axis matrices, :math:`K_d`, :math:`G_d`
and the identity, have no common congruence), before even the restriction of the
equation to the interior. The CG is exact to its tolerance, and a test checks it
against the dense QR solve.

An earlier design substituted :math:`U = C^{-1}(h + e)` to solve the collocation
system exactly by per-axis eigendecompositions; it fails because :math:`C` is
numerically singular outside the kernels' spectral band (condition number 1.6e11
for the initial 1D kernel), exactly where the prior, not the equation, decides.

Optimisation (:meth:`GPPDESolver.fit`): Adam on all parameters (nonlinear
problems), or for linear problems Adam on the hyper-parameters alternating with the
exact U update; with the update at every step this is gradient descent on the
profile :math:`\min_U \mathcal J` (envelope theorem: its gradient is
:math:`\partial_\theta \mathcal J` at the minimiser, :meth:`GPPDESolver.profile_loss`, with the
equation's multipliers :math:`\tau_r r` refined where the equation is met to round-off and the
computed residual is noise, :meth:`GPPDESolver._multipliers`). Then L-BFGS-B (scipy, the
kernels boxed to what the grid resolves) on the same objective with the precisions
held fixed, optionally in rounds with the precisions raised in between. 1D Poisson
``sin(100x)`` on 400 points, 100 Adam steps then two L-BFGS-B rounds: final-iterate
relative errors 1.5e-10 to 1.5e-8 (5 runs that differ only in round-off; 6.9e-10 in
24.6 s wall, 15.4 s CPU, one thread, in ``benchmarks/gp_poisson_1d.py``), where the
paper's joint Adam, given the same time, is at 8e-2.

Multi-scale solutions (the paper's extra GP): a mixture that locks on the high frequencies can
leave the slow part to a nearly constant component, and the equation's residual then holds it as
noise. A second solver built on the first, :meth:`GPPDESolver.correction` (``base=``), models
:math:`u = u_0 + v` with :math:`u_0` the first one's mean and :math:`v` a GP of one broad kernel
component per axis, fitted the same way to what :math:`u_0` leaves of the equation and the data
(1D ``sin(500x) - 2(x - 0.5)^2``: 4.7e-1 -> 1.8e-8; 2D Allen-Cahn, the paper's multi-scale solution:
1.3e-3 -> 1.7e-5; ``benchmarks/RESULTS.md``, GP section).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence, final

import numpy as np
import scipy.optimize
import torch
from torch import Tensor, nn

from .kernels import GaussianSpectralMixture, SpectralMixture1D, StudentTSpectralMixture
from .spectrum import empirical_spectrum, merge_spectra, spectral_peaks
from .kronecker import KroneckerCholesky, NotPositiveDefiniteError, apply_along, kron_dense, kron_matmul
from .problems import Advection, PDEProblem
from .transport import transport_error

__all__ = ["GPPDESolver", "USolveInfo"]

#: the transport estimate's residual grid, in collocation spacings per cell, and its test points per axis
_TRANSPORT_REFINE = 4
_TRANSPORT_POINTS = 96

_INADMISSIBLE_LOSS = 1e30
_RELATIVE_NOISE = 1e-4
#: A source whose rms is at most this fraction of the boundary data's (over the shortest axis length squared)
#: is round-off: the noise level is then set from the boundary data.
_ROUND_OFF_SOURCE = 1e-10
# init="spectrum": a peak component's spectral standard deviation rho / (sqrt(2) pi), in
# frequency bins 1 / L of its axis; peaks closer than the window's main lobe (bins) merge.
_PEAK_RHO_BINS = 0.5
_WINDOW_LOBE_BINS = 4.0


_LBFGS_RESTARTS = 5  # restarts of L-BFGS-B after a stalled step (failed line search or no decrease), per run
# first-order axes: the preconditioner's interior uses the eigenvectors of the axis blocks up to this
# condition number, else orthonormal bases (_FastDiagonalisationPreconditioner)
_MAX_EIGVEC_COND = 10.0
# the refinement of the equation's multipliers in profile_loss (_multipliers): CG tolerance and cap. Where
# the refinement matters (the equation met to round-off, advection) CG reaches the tolerance in a few
# iterations; where it does not within the cap (2D Poisson) the computed tau_r r is kept. It gives up early
# when the residual is still above 10 % after 5 iterations.
_MULTIPLIER_CG_TOL = 1e-6
_MULTIPLIER_CG_MAX_ITER = 20
_MULTIPLIER_CG_GIVE_UP = (5, 0.1)
# preconditioner="auto": CG iterations each candidate runs before the one with the lower CG objective goes
# on; the choice is then kept for this many more Kronecker U solves (unless one misses its tolerance)
_PROBE_ITERATIONS = 20
_PROBE_EVERY = 10
PRECONDITIONERS = ("auto", "fast_diagonalisation", "jacobi")


class _StopOptimisation(Exception):
    """Raised inside the L-BFGS-B objective when the callback asks to stop."""


@dataclass(frozen=True)
class USolveInfo:
    """What :meth:`GPPDESolver.solve_u` did.

    Attributes
    ----------
    method : str
        ``"dense"`` or ``"kronecker"``.
    cg_iterations : int
        Conjugate-gradient iterations on the whitened normal equations (0 when dense).
    cg_relative_residual : float
        Their final relative residual (0 when dense).
    newton_iterations : int
        Gauss–Newton steps (nonlinear problems; 0 for a linear one, solved in one go).
    preconditioner : str
        The CG's preconditioner (Kronecker path; with ``"auto"`` the one the probe chose, of
        the last Gauss–Newton step); empty when dense.
    """

    method: str
    cg_iterations: int
    cg_relative_residual: float
    newton_iterations: int = 0
    preconditioner: str = ""


@dataclass
class _Operators:
    """Per-evaluation quantities derived from the kernel parameters."""

    chol: KroneckerCholesky
    deriv_grams: list[Tensor | None]  # G_d = sum_t c_t K_d^(k_t), shapes (N_d, N_d); None: no term on axis d
    # the linear U problem's factorisation (dense path) or system and preconditioner (Kronecker path),
    # shared by the U solve and the multipliers
    dense_qr: tuple | None = field(default=None, repr=False)
    kronecker_system: tuple | None = field(default=None, repr=False)

    def axis_ops(self) -> list[Tensor]:
        r"""The matrices :math:`E_d = G_d K_d^{-1}` (zero where no term acts on axis d)."""
        out = []
        for d, g in enumerate(self.deriv_grams):
            if g is None:
                n = self.chol.sizes[d]
                c = self.chol.chols[d]
                out.append(torch.zeros(n, n, dtype=c.dtype, device=c.device))
            else:
                out.append(self.chol.right_solve(d, g))
        return out


@final
class GPPDESolver(nn.Module):
    r"""GP-HM solver for a :class:`~sciml.solvers.gp.problems.PDEProblem` on a uniform tensor grid.

    Parameters
    ----------
    problem : PDEProblem
    n_points : sequence of int
        Grid points per axis, boundary included (``>= 3`` each).
    kernels : sequence of SpectralMixture1D, optional
        One kernel per axis. Default: ``kernel_type.initialised(n_components,
        max_frequency)`` per axis.
    kernel_type : type, default :class:`GaussianSpectralMixture`
    n_components : int, default 30
    max_frequency : float or sequence of float, optional
        Upper end of the initial frequencies per axis, cycles per unit length.
        Default: the grid's Nyquist frequency, :math:`(N_d - 1) / (2 L_d)`.
    init : {"uniform", "spectrum"}, default "uniform"
        Start of the default kernels. ``"uniform"``: frequencies spread evenly over
        ``[0, max_frequency]`` (the authors' start, whose upper end they set by hand per
        problem; the Nyquist default needs no knowledge of the solution). ``"spectrum"``: per axis, the
        strongest peaks of the data's spectra (:meth:`data_peaks`) take the first
        components, each with a spectral standard deviation of half a frequency bin
        (:math:`\rho = \pi / (\sqrt2 L_d)`), the rest spread as in ``"uniform"``.
    max_peaks : int, optional
        ``init="spectrum"``: at most this many peak components per axis (default
        ``n_components // 3``).
    peak_share : float, optional
        ``init="spectrum"``: the peaks' share of the initial weight (default: equal
        weights for all components).
    jitter : float, default 1e-6
        Added to each kernel factor.
    boundary_weight : float, default 200
        :math:`\lambda_b`.
    log_precision : float, optional
        Initial :math:`\log\tau_r = \log\tau_b`. Default: a noise level of
        ``1e-4`` relative to the data, :math:`\tau = (10^{-4} s)^{-2}` with
        :math:`s` the rms of :math:`f` on the collocation points (of the boundary data
        when :math:`f` is zero or round-off, at most ``1e-10`` of the boundary data's
        rms over the shortest axis length squared; 1 when both are zero). Across 1D Poisson problems with
        frequencies from 0.3 to 16 cycles per unit, relative levels from 1e-3 to 1e-5
        gave the best final errors, and 0.35 (:math:`\tau = 1` for ``sin(2x)``) a
        100x worse one.
    dense_limit : int, default 1024
        :meth:`solve_u` uses dense linear algebra up to this many grid points.
    lift_boundary : bool, optional
        Past ``dense_limit``: lift the Dirichlet values in the CG preconditioner
        (:class:`_FastDiagonalisationPreconditioner`); default where an axis is first-order
        or the grid has three or more axes.
    base : GPPDESolver, optional
        A fitted solver of the same problem on the same grid whose posterior mean this one
        corrects (the paper's extra GP for the multi-scale problems, usually a broad
        low-frequency kernel: :meth:`correction`). The solution is modelled as
        :math:`u = u_0 + v`, :math:`u_0` the base's mean held fixed and :math:`v` this
        solver's GP, with its own kernels and precisions: the equation becomes
        :math:`A V + n(U_0 + V) = f - A_0 U_0` on the collocation points and the boundary data
        :math:`g - U_0` (:attr:`f` and :attr:`g` hold these), and :meth:`predict` returns the
        sum of the two means; :math:`U_0` is the base's mean on the grid. The base's data are
        taken at construction and its kernels are used by :meth:`predict`, so the base must
        not be fitted further.
    max_lengthscale : float, optional
        Keep every component's length scale :math:`\ell = 1/(\sqrt2\rho)` at most this many
        times its axis' length (:math:`\rho \ge 1/(\sqrt2\, c L_d)`), in Adam's projection and the
        L-BFGS-B box. Default: unbounded. A component free to become a pure sinusoid
        (:math:`\rho \to 0`) reproduces a sine's derivatives to round-off, but with such a
        component the kernels can also make the collocated derivatives of a slow, non-periodic
        part wrong (1D Poisson ``x**2 + sin(40*x)``: 0.2 relative error, the equation met on
        the grid, not between its points: :meth:`relative_residual`); bounded at 1, 6e-5, and
        ``sin(40*x)`` 1e-4 instead of 1e-10.
    dtype, device
        Of the grid, data and default kernels (float64 recommended).

    Attributes
    ----------
    u : Parameter, shape ``(N_1, ..., N_D)``
        Solution values on the grid.
    kernels : ModuleList
    log_tau_residual, log_tau_boundary : Parameter, shape ``()``
    axes : list of Tensor, shapes ``(N_d,)``
        Grid coordinates.
    interior, interior_mask, boundary_mask
        The collocation block (a tuple of per-axis slices and its mask) and the
        Dirichlet points.
    max_abs_frequency, max_rho, min_rho : list of float
        Per axis, the box the kernel parameters are kept in (:meth:`is_resolved`; ``min_rho``
        0 without ``max_lengthscale``).

    Examples
    --------
    >>> import torch
    >>> from sciml.solvers.gp import GPPDESolver, Poisson
    >>> solver = GPPDESolver(Poisson("sin(2*x)", [(0.0, 3.0)]), [40])
    >>> history = solver.fit(n_adam=20, u_update_every=1, n_lbfgs=20)
    >>> solver.relative_error(77) < 1e-3
    True
    """

    def __init__(
        self,
        problem: PDEProblem,
        n_points: Sequence[int],
        *,
        kernels: Sequence[SpectralMixture1D] | None = None,
        kernel_type: type[SpectralMixture1D] = GaussianSpectralMixture,
        n_components: int = 30,
        max_frequency: float | Sequence[float] | None = None,
        init: str = "uniform",
        max_peaks: int | None = None,
        peak_share: float | None = None,
        jitter: float = 1e-6,
        boundary_weight: float = 200.0,
        log_precision: float | None = None,
        dense_limit: int = 1024,
        lift_boundary: bool | None = None,
        base: "GPPDESolver | None" = None,
        max_lengthscale: float | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        name = type(problem).__name__
        n_points = tuple(int(n) for n in n_points)
        if len(n_points) != problem.dim:
            raise ValueError(f"{name}: expected n_points for {problem.dim} axes, got {len(n_points)}")
        if min(n_points) < 3:
            raise ValueError(f"{name}: expected at least 3 points per axis, got {n_points}")
        if not jitter >= 0 or not boundary_weight > 0:
            raise ValueError(f"jitter must be >= 0 and boundary_weight > 0 (got {jitter}, {boundary_weight})")
        self.problem = problem
        self.n_points = n_points
        self.jitter = float(jitter)
        self.boundary_weight = float(boundary_weight)
        self.dense_limit = int(dense_limit)
        self.lift_boundary = lift_boundary
        self._reset_cg_choice()
        self.axes = [torch.linspace(a, b, n, dtype=dtype, device=device) for (a, b), n in zip(problem.domain, n_points)]
        self.spacings = [(b - a) / (n - 1) for (a, b), n in zip(problem.domain, n_points)]

        # Collocation set I: a tensor product of per-axis index ranges; B is the rest.
        self.interior = tuple(
            slice(1 if lo else 0, n - 1 if hi else n) for (lo, hi), n in zip(problem.boundary_sides, n_points)
        )
        mask = torch.zeros(n_points, dtype=torch.bool, device=device)
        mask[self.interior] = True
        self.interior_mask = mask
        self.boundary_mask = ~mask

        coords = torch.meshgrid(*self.axes, indexing="ij")
        f = problem.source(*coords)
        g = problem.exact(*coords)
        for what, t in (("source f", f), ("solution u", g)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{problem!r}: the {what} is not finite everywhere on the grid")
        # the base is kept out of the module tree: its parameters are neither this solver's
        # hyper-parameters nor part of its state_dict
        self._base = (self._check_base(base),) if base is not None else ()
        if base is not None:
            # u_0 is the base's mean: at the grid points K (K + eps I)^{-1} U_0, not U_0 (with a jitter
            # the two differ, by 6e-4 for a fit of sin(300x) + exp(x) whose constant component has a weight
            # of 1e7), and its derivatives there are A_0 U_0; a base with a base of its own passes on its
            # data (f, g) less its own part.
            with torch.no_grad():
                u0 = base.predict(*self.axes).to(f)
                f = base.f.to(f) - base.apply_linear(base.u.detach()).to(f)
                g = g - u0
            self.register_buffer("base_u", u0)
        else:
            self.base_u = None
        self.register_buffer("f", f)
        self.register_buffer("g", g)

        nyquist = [(n - 1) / (2.0 * (b - a)) for (a, b), n in zip(problem.domain, n_points)]
        if init not in ("uniform", "spectrum"):
            raise ValueError(f"init must be 'uniform' or 'spectrum' (got {init!r})")
        if kernels is None:
            if max_frequency is None:
                max_frequency = nyquist
            elif isinstance(max_frequency, (int, float)):
                max_frequency = [float(max_frequency)] * problem.dim
            peaks = [None] * problem.dim
            if init == "spectrum":
                n_peaks = n_components // 3 if max_peaks is None else int(max_peaks)
                if not 0 <= n_peaks < n_components:
                    raise ValueError(f"max_peaks must be in [0, n_components) (got {n_peaks})")
                if n_peaks:
                    peaks = self.data_peaks(n_peaks, max_frequency)
            kernels = [
                kernel_type.initialised(n_components, fmax, peaks=p, peak_share=peak_share,
                                        peak_rho=_PEAK_RHO_BINS * math.sqrt(2.0) * math.pi / (b - a),
                                        dtype=dtype, device=device)
                for fmax, p, (a, b) in zip(max_frequency, peaks, problem.domain)
            ]
        if len(kernels) != problem.dim:
            raise ValueError(f"{name}: expected {problem.dim} kernels, got {len(kernels)}")
        self.kernels = nn.ModuleList(kernels)
        self.max_abs_frequency = nyquist
        self.max_rho = [math.pi * math.sqrt(2.0) * f for f in nyquist]
        if max_lengthscale is not None and not max_lengthscale > 0:
            raise ValueError(f"{name}: expected max_lengthscale > 0, got {max_lengthscale}")
        self.max_lengthscale = max_lengthscale
        self.min_rho = [0.0 if max_lengthscale is None else 1.0 / (math.sqrt(2.0) * max_lengthscale * (b - a))
                        for a, b in problem.domain]
        if max_lengthscale is not None:
            with torch.no_grad():
                for k, rmin in zip(self.kernels, self.min_rho):
                    k.log_rho.clamp_(min=math.log(rmin))
        self.u = nn.Parameter(torch.zeros(n_points, dtype=dtype, device=device))
        if log_precision is None:
            f_rms, g_rms = (float(d.square().mean().sqrt()) if d.numel() else 0.0
                            for d in (f[self.interior], g[self.boundary_mask]))
            # a source at round-off of the data (a pure transport profile whose terms cancel to 1e-15, a
            # harmonic solution) is no source: scaled by it the noise level started 1e-15 too small and
            # the fit never recovered (relative L2 0.1-0.75 on smooth solutions)
            length = min(b - a for a, b in problem.domain)  # the equation's terms scale like g / length^k
            scale = f_rms if f_rms > _ROUND_OFF_SOURCE * g_rms / length**2 else g_rms
            log_precision = -2.0 * math.log(_RELATIVE_NOISE * (scale if scale > 0.0 else 1.0))
        self.log_tau_residual = nn.Parameter(torch.tensor(float(log_precision), dtype=dtype, device=device))
        self.log_tau_boundary = nn.Parameter(torch.tensor(float(log_precision), dtype=dtype, device=device))

    @classmethod
    def correction(
        cls,
        base: "GPPDESolver",
        *,
        kernel_type: type[SpectralMixture1D] = StudentTSpectralMixture,
        length_scale: float = 1.0,
        jitter: float | None = None,
        **kwargs,
    ) -> "GPPDESolver":
        r"""A solver for what ``base``'s mean leaves of the solution: the paper's extra GP.

        Per axis a single kernel component at frequency 0, held there (:math:`\mu` does not
        train): a Matérn-5/2 kernel with the default ``kernel_type``, as in the paper, a
        squared exponential with :class:`GaussianSpectralMixture`. Its initial length scale
        :math:`1/\rho` is ``length_scale`` times the axis length; weight and scale are fitted,
        and so are the precisions, which start from the base's residual (the default
        ``log_precision``). ``kwargs`` go to the constructor (``boundary_weight``, ...).

        A spectral mixture that locks on a high frequency can leave the slow part of a
        multi-scale solution to a nearly constant component: 1D ``sin(500x) - 2(x - 0.5)^2``
        ends with a kernel spanned by :math:`1, \cos 500x, \sin 500x`, and the quadratic's
        source :math:`-4`, next to the :math:`2.5 \cdot 10^5` of the sine's, is left as
        equation noise. Its residual is smooth, and a broad kernel fits it. The jitter
        must be small for that: the mean of a jittered GP misses its own grid values by
        :math:`\varepsilon (K + \varepsilon I)^{-1} U`, which for a smooth kernel is not small
        (``cases/gp_poisson_1d_sin500.yaml``). ``jitter=None`` takes the smallest power of ten
        from 1e-14 up at which the initial kernels and the same kernels with four times the
        length scale (the fit may broaden them) have a Cholesky factor on the grid.
        """
        if not length_scale > 0:
            raise ValueError(f"length_scale must be positive (got {length_scale})")
        dtype, device = base.u.dtype, base.u.device
        kernels = []
        for a, b in base.problem.domain:
            k = kernel_type(torch.zeros(1, dtype=dtype, device=device), rho=1.0 / (length_scale * (b - a)))
            k.mu.requires_grad_(False)
            kernels.append(k)
        if jitter is None:
            jitter = _factorable_jitter(kernels, base.n_points, base.spacings)
        return cls(base.problem, base.n_points, kernels=kernels, jitter=jitter, base=base,
                   dense_limit=kwargs.pop("dense_limit", base.dense_limit), dtype=dtype, device=device, **kwargs)

    def _check_base(self, base: "GPPDESolver") -> "GPPDESolver":
        if not isinstance(base, GPPDESolver):
            raise TypeError(f"base must be a GPPDESolver (got {type(base).__name__})")
        if type(base.problem) is not type(self.problem) or repr(base.problem) != repr(self.problem):
            raise ValueError(f"base solves {base.problem!r}, not {self.problem!r}")
        if base.n_points != self.n_points:
            raise ValueError(f"base has grid {base.n_points}, not {self.n_points}")
        return base

    @property
    def base(self) -> "GPPDESolver | None":
        """The solver whose mean this one corrects (``base`` argument), or None."""
        return self._base[0] if self._base else None

    def _total(self, u: Tensor) -> Tensor:
        """:math:`U_0 + U`, the values the nonlinearity sees (:math:`U_0 = 0` without a base)."""
        return u if self.base_u is None else u + self.base_u

    def _nonlinearity(self, u: Tensor) -> Tensor | None:
        return self.problem.nonlinearity(self._total(u))

    def _nonlinearity_derivative(self, u: Tensor) -> Tensor:
        return self.problem.nonlinearity_derivative(self._total(u))

    @torch.no_grad()
    def data_peaks(self, max_peaks: int, max_frequency: Sequence[float] | None = None) -> list[Tensor]:
        r"""Per axis, the frequencies of the strongest peaks in the spectra of the problem data.

        The spectra (:mod:`~sciml.solvers.gp.spectrum`) along axis d: of the source
        :math:`f` on the collocation block, and of the Dirichlet data on every face
        normal to another axis, each scaled to a peak of one and summed. Peaks within
        the window's main lobe of 0 or of a stronger peak (four frequency bins,
        :math:`4/L_d`) or above ``max_frequency[d]`` (default: the Nyquist frequency)
        are dropped, and so are peaks below 1e-6 of the strongest.
        """
        if max_frequency is None:
            max_frequency = self.max_abs_frequency
        source = self.f[self.interior]
        has_source = bool(source.ne(0).any())
        out = []
        for d, (n, h, (a, b)) in enumerate(zip(self.n_points, self.spacings, self.problem.domain)):
            n_fft = 16 * n  # one frequency grid for the source's and the faces' lines
            spectra = []
            if has_source and source.shape[d] >= 3:
                spectra.append(empirical_spectrum(source, d, h, n_fft=n_fft))
            for e, sides in enumerate(self.problem.boundary_sides):
                if e == d:
                    continue
                for side, index in zip(sides, (0, self.n_points[e] - 1)):
                    if side:
                        spectra.append(empirical_spectrum(self.g.select(e, index), d - (e < d), h, n_fft=n_fft))
            merged = merge_spectra(spectra)
            if merged is None:
                out.append(self.f.new_zeros(0))
                continue
            freqs, power = merged
            keep = freqs <= max_frequency[d]
            lobe = _WINDOW_LOBE_BINS / (b - a)
            out.append(spectral_peaks(freqs[keep], power[keep], max_peaks=max_peaks, rel_power=1e-6,
                                      min_frequency=lobe, min_separation=lobe))
        return out

    # ------------------------------------------------------------------ operators and loss

    @torch.no_grad()
    def is_resolved(self) -> bool:
        r"""Whether every component is resolved by the grid: :math:`|\mu_q| \le f_N` and :math:`\rho_q \le \sqrt2\pi f_N`.

        :math:`f_N = (N_d - 1) / (2 L_d)` is the Nyquist frequency of axis d; a
        Gaussian envelope's spectral standard deviation is :math:`\rho / (\sqrt2\pi)`.
        """
        return all(
            bool((k.mu.abs() <= fmax).all()) and bool((k.log_rho <= math.log(rmax)).all())
            and bool((k.rho >= rmin * (1 - 1e-12)).all())
            for k, fmax, rmax, rmin in zip(self.kernels, self.max_abs_frequency, self.max_rho, self.min_rho)
        )

    @torch.no_grad()
    def _project_to_resolved(self) -> None:
        for k, fmax, rmax, rmin in zip(self.kernels, self.max_abs_frequency, self.max_rho, self.min_rho):
            k.mu.clamp_(-fmax, fmax)
            k.log_rho.clamp_(min=math.log(rmin) if rmin > 0 else None, max=math.log(rmax))

    def hyperparameters(self) -> list[nn.Parameter]:
        """All parameters except :attr:`u`."""
        return [p for n, p in self.named_parameters() if n != "u"]

    def _operators(self) -> _Operators:
        orders: dict[int, list[tuple[int, float]]] = {}
        for axis, order, coeff in self.problem.linear_terms:
            orders.setdefault(axis, []).append((order, coeff))
        grams = [
            k.toeplitz_grams(n, h, order=max((o for o, _ in orders.get(d, [])), default=0))
            for d, (k, n, h) in enumerate(zip(self.kernels, self.n_points, self.spacings))
        ]
        chol = KroneckerCholesky([g[0] for g in grams], self.jitter)
        deriv = []
        for d, g in enumerate(grams):
            terms = orders.get(d)
            deriv.append(None if terms is None else sum(coeff * g[order] for order, coeff in terms))
        return _Operators(chol, deriv)

    def apply_linear(self, u: Tensor, ops: _Operators | None = None) -> Tensor:
        r""":math:`A U = \sum_d G_d K_d^{-1} U` along axis d, without forming :math:`G_d K_d^{-1}`."""
        ops = self._operators() if ops is None else ops
        out = torch.zeros_like(u)
        for d, g in enumerate(ops.deriv_grams):
            if g is not None:
                out = out + apply_along(d, g, ops.chol.solve_along(d, u))
        return out

    def residual(self, u: Tensor | None = None, ops: _Operators | None = None) -> Tensor:
        r""":math:`A U + n(U) - f` on the collocation points, shape of the interior block."""
        u = self.u if u is None else u
        ops = self._operators() if ops is None else ops
        lu = self.apply_linear(u, ops)
        nonlinear = self._nonlinearity(u)
        if nonlinear is not None:
            lu = lu + nonlinear
        return (lu - self.f)[self.interior]

    def loss_terms(
        self, u: Tensor | None = None, ops: _Operators | None = None, multipliers: Tensor | None = None
    ) -> dict[str, Tensor]:
        r"""``log_prior``, ``boundary_loglik`` (before the weight λ_b), ``residual_loglik`` and ``loss``.

        ``multipliers``: the equation's multipliers :math:`\lambda = \tau_r r` at a minimiser
        over U (:meth:`_multipliers`); the values are unchanged, and the hyper-parameter
        gradient of the residual term is taken with them in place of the computed
        :math:`\tau_r r` (:meth:`profile_loss`)."""
        u = self.u if u is None else u
        ops = self._operators() if ops is None else ops
        log_prior = ops.chol.log_prob(u)
        r = self.residual(u, ops)
        b = (u - self.g)[self.boundary_mask]
        if multipliers is None:
            ll_r = _gaussian_loglik(r, self.log_tau_residual)
        else:
            ll_r = _gaussian_loglik_given_multipliers(r, self.log_tau_residual, multipliers)
        ll_b = _gaussian_loglik(b, self.log_tau_boundary)
        loss = -(log_prior + self.boundary_weight * ll_b + ll_r)
        return {"log_prior": log_prior, "boundary_loglik": ll_b, "residual_loglik": ll_r, "loss": loss}

    def loss(self) -> Tensor:
        r"""The negative log joint :math:`\mathcal J` at the current parameters (differentiable)."""
        return self.loss_terms()["loss"]

    def profile_loss(self, ops: _Operators | None = None, *, cg_tol: float = 1e-10, cg_max_iter: int = 500,
                     newton_tol: float = 1e-10, newton_max_iter: int = 30) -> Tensor:
        r"""Set :attr:`u` to the minimiser over U (:meth:`solve_u`) and return :math:`\min_U \mathcal J`.

        Its gradient in the hyper-parameters is the profile's (envelope theorem):
        :math:`\partial_\theta \mathcal J` at the minimiser, whose equation term is
        :math:`\lambda^T \partial_\theta (AU)_I` with the multipliers :math:`\lambda = \tau_r r`.
        Where the equation is met to round-off (a hard constraint: the precision far above the
        curvature the prior puts on the residual), the computed :math:`\tau_r r` is round-off
        times :math:`\tau_r`; :meth:`_multipliers` refines it.
        """
        ops = self._operators() if ops is None else ops
        self._solve_u(ops, cg_tol=cg_tol, cg_max_iter=cg_max_iter, newton_tol=newton_tol,
                      newton_max_iter=newton_max_iter)
        lam = self._multipliers(ops, cg_tol=max(cg_tol, _MULTIPLIER_CG_TOL),
                                cg_max_iter=min(cg_max_iter, _MULTIPLIER_CG_MAX_ITER))
        return self.loss_terms(ops=ops, multipliers=lam)["loss"]

    # ------------------------------------------------------------------ exact U update

    @torch.no_grad()
    def solve_u(
        self,
        *,
        cg_tol: float = 1e-10,
        cg_max_iter: int = 500,
        method: str | None = None,
        preconditioner: str = "auto",
        newton_tol: float = 1e-10,
        newton_max_iter: int = 30,
    ) -> USolveInfo:
        r"""Set :attr:`u` to the minimiser of :math:`\mathcal J` over U for the current kernels.

        Linear problems: one linear solve (exact). Nonlinear problems (a pointwise
        :math:`n(u)`): Gauss–Newton from the current :attr:`u` — each step is the linear
        solve with the collocation operator :math:`A + \mathrm{diag}\,n'(u)` and source
        :math:`f - n(u) + n'(u)\,u`, halved until :math:`\mathcal J` does not increase —
        until the step is below ``newton_tol`` relative to U. A fixed point is a
        stationary point of :math:`\mathcal J` in U (the Gauss–Newton model has the same
        gradient there), so the hyper-parameter gradient at it is the profile's.

        Parameters
        ----------
        cg_tol, cg_max_iter
            Relative residual tolerance and iteration cap of the CG (Kronecker path).
        method : {"dense", "kronecker"}, optional
            Default: dense up to ``dense_limit`` grid points.
        preconditioner : {"auto", "fast_diagonalisation", "jacobi"}
            Of the CG (Kronecker path): :class:`_FastDiagonalisationPreconditioner`,
            the diagonal of the whitened normal matrix, or (``"auto"``) whichever of the two
            lowers the CG objective more in a short probe (:func:`_probed_cg`). Neither wins
            everywhere: the fast diagonalisation is nearly exact for the broadband kernels a fit
            starts from, and stalls on the near-low-rank-plus-jitter kernels a fit ends with, where
            the diagonal does well (``benchmarks/gp_preconditioner.py``).
        newton_tol, newton_max_iter
            Stopping rule of the Gauss–Newton iteration (nonlinear problems).
        """
        return self._solve_u(
            self._operators(), cg_tol=cg_tol, cg_max_iter=cg_max_iter, method=method, preconditioner=preconditioner,
            newton_tol=newton_tol, newton_max_iter=newton_max_iter,
        )

    def final_solve(self, relative_jitter: float | None = None, *, cg_tol: float = 1e-10,
                    cg_max_iter: int = 3000) -> USolveInfo:
        r"""Re-solve U for the current kernels to ``cg_tol``, with the jitter lowered to ``relative_jitter``
        times the smallest kernel scale if given.

        Sets :attr:`jitter` to :math:`\min(\varepsilon, r \min_d k_d(0))` (:math:`k_d(0) = \sum_q w_q`,
        :math:`\varepsilon` the jitter of the fit: kernels whose weights grew, 1D ``sin(500x) - 2(x -
        0.5)^2`` to a scale of ~1.9e3, keep theirs instead of a raised one) and
        :attr:`u` to the minimiser of :math:`\mathcal J` for the current kernels at that
        jitter; :meth:`predict` then uses the same jitter. Where the kernels' Gram matrices have no
        Cholesky factor at that jitter it is raised tenfold until they do (at most to the fit's
        jitter). Meant for the end of a fit:
        the jitter conditions the U problem during the optimisation, and once the weights
        have shrunk (2D Poisson ``sin(100x) sin(100y)`` at 300²: to 0.017-0.05) the fixed
        absolute jitter is a sizeable part of the kernel and sets the error
        (``benchmarks/RESULTS.md``, GP section). ``relative_jitter=None`` keeps the jitter: a tight
        solve of U alone (the U updates inside a fit stop early).
        """
        self._reset_cg_choice()
        fit_jitter = self.jitter
        if relative_jitter is not None:
            if not 0.0 < relative_jitter < 1.0:
                raise ValueError(f"relative_jitter must be in (0, 1) (got {relative_jitter})")
            with torch.no_grad():
                scale = min(float(k.weight.sum()) for k in self.kernels)
            self.jitter = min(self.jitter, relative_jitter * scale)
        u0 = self.u.detach().clone()
        while True:
            try:
                return self.solve_u(cg_tol=cg_tol, cg_max_iter=cg_max_iter)
            except (NotPositiveDefiniteError, FloatingPointError):
                # the lowered jitter is below what these kernels' Gram matrices can be factored with (a
                # smooth solution fitted by near-degenerate components): raise it tenfold, at most back
                # to the fit's, where the U problem was solved throughout the fit
                if self.jitter >= fit_jitter:
                    raise
                self.jitter = min(10.0 * self.jitter, fit_jitter)
                with torch.no_grad():
                    self.u.copy_(u0)

    @torch.no_grad()
    def _solve_u(
        self, ops: _Operators, *, cg_tol=1e-10, cg_max_iter=500, method=None, preconditioner="auto",
        newton_tol=1e-10, newton_max_iter=30,
    ) -> USolveInfo:
        mask = self.interior_mask
        w_sqrt = self._weights_sqrt()
        if method is None:
            method = "dense" if self.u.numel() <= self.dense_limit else "kronecker"
        if method not in ("dense", "kronecker"):
            raise ValueError(f"method must be 'dense' or 'kronecker' (got {method!r})")

        def linear_solve(h: Tensor, diag: Tensor | None, u0: Tensor) -> tuple[Tensor, USolveInfo]:
            if method == "dense":
                u, info = self._solve_u_dense(ops, h, w_sqrt, diag)
            else:
                u, info = self._solve_u_kronecker(ops, h, w_sqrt, cg_tol, cg_max_iter, preconditioner, diag, u0)
            if not bool(torch.isfinite(u).all()):
                raise FloatingPointError(
                    f"{self.problem!r}: the exact U update produced non-finite values; the collocation "
                    "system of the current kernels is singular"
                )
            return u, info

        if self.problem.is_linear:
            u, info = linear_solve(torch.where(mask, self.f, self.g), None, self.u.detach())
            self.u.copy_(u)
            return info
        u = self.u.detach().clone()
        loss = float(self.loss_terms(u, ops)["loss"])
        cg_total, steps, info = 0, 0, USolveInfo(method, 0, 0.0)
        for steps in range(1, newton_max_iter + 1):
            d = self._nonlinearity_derivative(u)
            h = torch.where(mask, self.f - self._nonlinearity(u) + d * u, self.g)
            u_lin, info = linear_solve(h, torch.where(mask, d, torch.zeros_like(d)), u)
            cg_total += info.cg_iterations
            step, alpha = u_lin - u, 1.0
            trial_loss = math.inf
            while alpha >= 1e-3:  # damped: a full step may overshoot far from the solution
                trial = u + alpha * step
                trial_loss = float(self.loss_terms(trial, ops)["loss"])
                if trial_loss <= loss:
                    break
                alpha *= 0.5
            if not trial_loss <= loss:  # no descent along the step: U is stationary to the model's accuracy
                break
            u, loss = trial, trial_loss
            if float((alpha * step).norm()) <= newton_tol * float(u.norm()):
                break
        self.u.copy_(u)
        return USolveInfo(method, cg_total, info.cg_relative_residual, steps, info.preconditioner)

    def _dense_whitened(self, ops, w_sqrt, diag: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Dense ``M = W^½ C L``, the Kronecker Cholesky factor ``L`` (flattened grid) and the QR
        factors of the stacked ``[M; I]``, which solve ``min |M v - b|^2 + |v - c|^2`` without the
        normal matrix ``I + M^T M`` (:meth:`_ridge_solve`). Kept on ``ops`` for a linear problem.

        ``diag``: a pointwise term added to the collocation operator (Gauss–Newton)."""
        if diag is None and ops.dense_qr is not None and torch.equal(ops.dense_qr[0], w_sqrt):
            return ops.dense_qr[1:]
        sizes = self.n_points
        axis_ops = [e.detach() for e in ops.axis_ops()]
        eyes = [torch.eye(s, dtype=w_sqrt.dtype, device=w_sqrt.device) for s in sizes]
        a = sum(kron_dense([axis_ops[k] if k == d else eyes[k] for k in range(len(sizes))]) for d in range(len(sizes)))
        if diag is not None:
            a = a + torch.diag(diag.reshape(-1))
        chol = kron_dense([c.detach() for c in ops.chol.chols])
        m = w_sqrt.reshape(-1, 1) * torch.where(self.interior_mask.reshape(-1, 1), a @ chol, chol)
        q, r = torch.linalg.qr(torch.cat([m, torch.eye(m.shape[1], dtype=m.dtype, device=m.device)]))
        if diag is None:
            ops.dense_qr = (w_sqrt, m, chol, q, r)
        return m, chol, q, r

    @staticmethod
    def _ridge_solve(q: Tensor, r: Tensor, b: Tensor, prior_mean: Tensor | None = None) -> Tensor:
        """``argmin_v |M v - b|^2 + |v - prior_mean|^2`` (default mean 0) from the QR factors of ``[M; I]``."""
        n = r.shape[0]
        bottom = torch.zeros(n, dtype=r.dtype, device=r.device) if prior_mean is None else prior_mean
        rhs = q.mT @ torch.cat([b, bottom])
        return torch.linalg.solve_triangular(r, rhs[:, None], upper=True)[:, 0]

    def _solve_u_dense(self, ops, h, w_sqrt, diag: Tensor | None = None):
        """Dense stacked least squares ``[W^½ C L; I] V = [W^½ h; 0]``, ``U = L V`` (QR)."""
        m, chol, q, r = self._dense_whitened(ops, w_sqrt, diag)
        v = self._ridge_solve(q, r, w_sqrt.reshape(-1) * h.reshape(-1))
        return (chol @ v).reshape(self.n_points), USolveInfo("dense", 0, 0.0)

    def _kronecker_system(self, ops, w_sqrt, preconditioner="fast_diagonalisation", diag: Tensor | None = None):
        """The whitened normal equations of the U update and their preconditioner (Kronecker path);
        kept on ``ops`` for a linear problem."""
        cached = ops.kronecker_system
        if (diag is None and cached is not None and cached[0] == preconditioner
                and torch.equal(cached[1], w_sqrt)):
            return cached[2], cached[3]
        chols = [c.detach() for c in ops.chol.chols]
        grams = [None if g is None else g.detach() for g in ops.deriv_grams]
        mask = self.interior_mask
        system = _WhitenedNormalEquations(chols, grams, self.interior, mask, w_sqrt, diag)
        if preconditioner == "fast_diagonalisation":
            tau_r = float(w_sqrt[mask].reshape(-1)[0] ** 2)
            tau_b = float(w_sqrt[~mask].reshape(-1)[0] ** 2) if bool((~mask).any()) else 0.0
            axis_ops = [e.detach() for e in ops.axis_ops()]
            shift = 0.0 if diag is None else float(diag[mask].mean())
            precond = _FastDiagonalisationPreconditioner(system, chols, axis_ops, self.interior, mask, tau_r, tau_b,
                                                         shift, lift=self.lift_boundary)
        elif preconditioner == "jacobi":
            precond = system.jacobi
        else:
            raise ValueError(f"preconditioner must be 'fast_diagonalisation' or 'jacobi' (got {preconditioner!r})")
        if diag is None:
            ops.kronecker_system = (preconditioner, w_sqrt, system, precond)
        return system, precond

    def _solve_u_kronecker(self, ops, h, w_sqrt, cg_tol, cg_max_iter, preconditioner="auto",
                           diag: Tensor | None = None, u0: Tensor | None = None):
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(f"preconditioner must be one of {PRECONDITIONERS} (got {preconditioner!r})")
        auto = preconditioner == "auto"
        system, precond = self._kronecker_system(ops, w_sqrt, "fast_diagonalisation" if auto else preconditioner, diag)
        v0 = system.whiten(self.u.detach() if u0 is None else u0)
        candidates = {"fast_diagonalisation": precond, "jacobi": system.jacobi} if auto else {preconditioner: precond}
        probe = auto and (self._cg_choice is None or self._cg_choice_uses >= _PROBE_EVERY)
        if auto and not probe:  # keep the last probe's choice
            candidates = {self._cg_choice: candidates[self._cg_choice]}
        v, iters, rel, chosen = _probed_cg(system.normal_matvec, system.rhs(h), candidates, v0, cg_tol, cg_max_iter)
        if auto:
            self._cg_choice, self._cg_choice_uses = chosen, (0 if probe else self._cg_choice_uses + 1)
            if rel > cg_tol:  # the kept choice may no longer be the better one
                self._cg_choice = None
        return system.unwhiten(v), USolveInfo("kronecker", iters, rel, preconditioner=chosen)

    def _reset_cg_choice(self) -> None:
        """Forget the preconditioner ``"auto"`` chose: the next Kronecker U solve probes again. Called
        where a fit or the final solve starts, so that a resumed run (new solver) and an uninterrupted
        one take the same path."""
        self._cg_choice: str | None = None
        self._cg_choice_uses = 0

    def _weights_sqrt(self) -> Tensor:
        r""":math:`W^{1/2}` on the grid: :math:`\sqrt{\tau_r}` on the collocation points, :math:`\sqrt{\lambda_b\tau_b}` elsewhere."""
        tau_r = self.log_tau_residual.detach().exp()
        tau_b = self.boundary_weight * self.log_tau_boundary.detach().exp()
        return torch.where(self.interior_mask, tau_r, tau_b).sqrt()

    @torch.no_grad()
    def _multipliers(self, ops: _Operators, *, method: str | None = None, cg_tol: float = 1e-10,
                     cg_max_iter: int = 500) -> Tensor | None:
        r"""The equation's multipliers :math:`\lambda = \tau_r r` at the minimiser over U, refined.

        In whitened variables the minimiser satisfies :math:`V + M^T y = 0` with the scaled
        residual :math:`y = M V - W^{1/2} h` (:math:`M` linearised at :attr:`u` for a
        nonlinear problem). Where the equation is met to round-off, the computed
        :math:`y_0 = W^{1/2} r(U)` is a difference of two nearly equal terms times
        :math:`\sqrt{\tau_r}` (``benchmarks/gp_gradient_check.py``: advection ``sin(x - 200 t)`` at
        70², residual rms 9e-12 against 79 for each of its two terms; the x-kernel gradient built
        from it 20-290 % off finite differences, three of six signs wrong). Its error :math:`e` shows in :math:`V + M^T y_0 = (I + M^T M)\delta V + M^T e`,
        and :math:`y = y_0 - M (I + M^T M)^{-1}(V + M^T y_0)` removes it where :math:`M`'s
        singular values exceed one (a constraint the equation enforces) and keeps :math:`y_0`
        where they are below (there :math:`y` is as large as the data and :math:`y_0` exact to
        round-off). It also corrects an inexact U: with :math:`V = V^* + \delta V` the
        formula returns :math:`y^*`. One more solve with the U update's operator, from zero.

        Returns :math:`\lambda` on the collocation block (the shape of :meth:`residual`), or None
        when the CG (Kronecker path) stops at ``cg_max_iter`` above ``cg_tol``: a partial
        correction is worse than none (2D Poisson, where :math:`y_0` is accurate and the
        correction would take a hundred iterations: final errors 10x larger in two of two runs
        with the partial one).
        """
        u = self.u.detach()
        mask = self.interior_mask
        w_sqrt = self._weights_sqrt()
        diag = None
        if not self.problem.is_linear:
            diag = torch.where(mask, self._nonlinearity_derivative(u), torch.zeros_like(u))
        r = u - self.g  # the boundary rows; the collocation rows are the equation's residual
        r[self.interior] = self.residual(u, ops)
        y0 = w_sqrt * r
        if method is None:
            method = "dense" if u.numel() <= self.dense_limit else "kronecker"
        if method == "dense":
            m, chol, q, r = self._dense_whitened(ops, w_sqrt, diag)
            v = torch.linalg.solve_triangular(chol, u.reshape(-1, 1), upper=False)[:, 0]
            b = v + m.mT @ y0.reshape(-1)
            # (I + M^T M) z = b: the normal equation of min |M z|^2 + |z - b|^2
            z = self._ridge_solve(q, r, torch.zeros(m.shape[0], dtype=u.dtype, device=u.device), b)
            y = (y0.reshape(-1) - m @ z).reshape(u.shape)
        else:
            system, precond = self._kronecker_system(ops, w_sqrt, diag=diag)
            if self._cg_choice == "jacobi":  # what the last U solve's probe chose
                precond = system.jacobi
            b = system.whiten(u) + system._mt(y0)
            z, _, rel = _preconditioned_cg(system.normal_matvec, b, precond, torch.zeros_like(b), cg_tol, cg_max_iter,
                                           give_up=_MULTIPLIER_CG_GIVE_UP)
            if rel > cg_tol:
                return None
            y = y0 - system._m(z)
        return (w_sqrt * y)[self.interior]

    # ------------------------------------------------------------------ optimisation

    def fit(
        self,
        n_adam: int = 1000,
        lr: float = 1e-2,
        *,
        u_update_every: int | None = None,
        n_lbfgs: int = 0,
        lbfgs_learn_precisions: bool = False,
        lbfgs_rounds: int = 1,
        lbfgs_precision_step: float = 1.0,
        u_tol: float = 1e-8,
        u_max_iter: int = 60,
        u_newton_max_iter: int = 3,
        lbfgs_trust: float | None = None,
        lbfgs_trust_every: int = 20,
        callback: Callable[["GPPDESolver", int, float], bool | None] | None = None,
    ) -> list[float]:
        r"""Minimise :math:`\mathcal J`: Adam, then optionally L-BFGS-B.

        Parameters
        ----------
        n_adam : int
            Adam steps.
        lr : float
            Adam learning rate (paper: 1e-2).
        u_update_every : int, optional
            Adam moves only the hyper-parameters, and :attr:`u` is replaced by the
            minimiser over U (:meth:`solve_u`: exact for linear problems, Gauss–Newton
            for nonlinear ones) before every ``u_update_every``-th step and at the end;
            the L-BFGS-B phase then minimises the profile :math:`\min_U \mathcal J`
            over the hyper-parameters. ``None``: every parameter is moved by Adam and
            L-BFGS-B.
        n_lbfgs : int
            Iteration cap of each L-BFGS-B run (0: no L-BFGS phase). L-BFGS-B
            (scipy) keeps the kernels in the box of :meth:`is_resolved`.
        lbfgs_learn_precisions : bool, default False
            Whether L-BFGS-B also moves :math:`\tau_r, \tau_b`. Off by default: the
            loss decreases as the precisions grow faster than the kernels can follow,
            and a quasi-Newton step takes that road at once (1D ``sin(100x)``, 400
            points, after 500 Adam steps, torch's L-BFGS: error 9e-5 -> 2.4e-3 with
            learned precisions, 9e-5 -> 8e-6 with the precisions Adam reached held
            fixed, the kernels sharpening instead). Adam's bounded steps make its
            precisions grow slowly, a built-in continuation; ``lbfgs_rounds`` makes
            it explicit.
        lbfgs_rounds : int, default 1
            L-BFGS-B runs; before each run after the first, the log-precisions are
            raised by ``lbfgs_precision_step`` (an explicit continuation: tighter
            equation and boundary fits, the kernels re-optimised for them). 1D
            ``sin(100x)``, 400 points, 100 Adam steps: one run ends between 5e-10 and
            4e-6 depending on round-off; a second run after raising the precisions
            by e ends between 1.5e-10 and 1.5e-8 (5 runs each).
        lbfgs_precision_step : float, default 1.0
            Increment of :math:`\log\tau_r` and :math:`\log\tau_b` between rounds.
        u_tol : float, default 1e-8
            CG tolerance of the U updates inside the loop (Kronecker path), and the
            Gauss–Newton step tolerance there (nonlinear problems); the update after
            each phase uses :meth:`solve_u`'s 1e-10. CG's residual
            oscillates by orders of magnitude on the way down: 2D Poisson
            ``sin(100x) sin(100y)`` at 300², warm-started from the previous step,
            reaches 1e-8 in 6-11 iterations and 1e-10 in 35-50.
        u_max_iter : int, default 60
            CG iteration cap of those updates. An unconverged U still gives an
            upper bound of the profile loss, :math:`\mathcal J(U) \ge \min_U
            \mathcal J`, so a line search backs off from it; without the cap one
            L-BFGS-B trial point far from the current kernels (the same 2D case)
            took 500 iterations (24 s) to return a loss of 4e12.
        u_newton_max_iter : int, default 3
            Gauss–Newton steps of those updates (nonlinear problems), each warm-started
            from the U of the best evaluation so far. Like the CG cap: an unconverged U
            bounds the profile loss from above. Without a cap the steps go on while each
            capped CG solve lowers the loss a little (2D Allen–Cahn, 200²: 11 steps of 60
            CG iterations in one evaluation, over an hour for the first L-BFGS-B round).
        lbfgs_trust : float, optional
            A trust box for the kernels in the L-BFGS-B phase: every
            ``lbfgs_trust_every`` iterations L-BFGS-B restarts inside the box
            :math:`|\mu_q - \mu_q^0| \le c\,\rho_q^0 / (\sqrt2\pi)` (``c = lbfgs_trust``
            times the spectral standard deviation of component q at the restart) and
            :math:`|\log\rho_q - \log\rho_q^0| \le \log 2`, intersected with the
            resolved box. ``None``: one unrestricted run. A quasi-Newton trial point
            that moves a sharp component by more than its bandwidth leaves the source
            outside the kernels' band, where the U problem is nearly singular and its
            CG stops at the cap with an inexact loss and gradient.
        lbfgs_trust_every : int, default 20
            L-BFGS-B iterations between re-centrings of the trust box.
        callback : callable ``(solver, step, loss) -> bool | None``, optional
            Called after every Adam step and L-BFGS-B evaluation (steps continue
            counting); returning ``True`` stops the optimisation.

        Parameters with ``requires_grad`` off are held fixed, e.g.
        ``solver.log_tau_residual.requires_grad_(False)`` fixes a precision.

        The kernels are kept where the grid resolves them (:meth:`is_resolved`):
        Adam's steps are projected back (frequencies and scales clamped), and
        L-BFGS-B works in that box. Beyond the Nyquist frequency
        or with envelopes narrower than the grid spacing the GP mean's derivatives at
        the grid points stop meaning anything, and a sub-grid component "explains" any
        source: on ``sin(2x)``, 30 points, 6 components, unconstrained L-BFGS lowered
        the loss to a solution 93 % wrong with a component at twice the Nyquist
        frequency and :math:`\rho` 120 times the inverse spacing.

        Returns
        -------
        list of float
            The loss at every step.
        """
        alternate = u_update_every is not None
        if alternate and u_update_every < 1:
            raise ValueError(f"u_update_every must be positive (got {u_update_every})")
        if lbfgs_rounds < 1:
            raise ValueError(f"lbfgs_rounds must be positive (got {lbfgs_rounds})")
        params = [p for p in (self.hyperparameters() if alternate else self.parameters()) if p.requires_grad]
        history: list[float] = []
        self._reset_cg_choice()

        # The CG warm start is the U of the best evaluation so far, not of the last one:
        # a rejected line-search trial (kernels far off) would leave a U far from the next
        # trial's, and its CG would run into the cap.
        best: dict = {"loss": math.inf, "u": None}

        def evaluate() -> Tensor:
            ops = self._operators()
            if alternate:
                if best["u"] is not None:
                    with torch.no_grad():
                        self.u.copy_(best["u"])
                loss = self.profile_loss(ops, cg_tol=u_tol, cg_max_iter=u_max_iter, newton_tol=u_tol,
                                         newton_max_iter=u_newton_max_iter)
            else:
                loss = self.loss_terms(ops=ops)["loss"]
            if alternate and float(loss.detach()) < best["loss"]:
                best.update(loss=float(loss.detach()), u=self.u.detach().clone())
            return loss

        adam = torch.optim.Adam(params, lr=lr)
        for step in range(n_adam):
            adam.zero_grad(set_to_none=True)
            if alternate and step % u_update_every == 0:
                loss = evaluate()
            else:
                loss = self.loss()
            loss.backward()
            adam.step()
            self._project_to_resolved()
            history.append(float(loss.detach()))
            if callback is not None and callback(self, step, history[-1]):
                return history
        lbfgs_follows = n_lbfgs > 0 and bool(params)
        if alternate and not lbfgs_follows:  # else L-BFGS-B's first evaluation solves for U
            self.solve_u()

        if lbfgs_follows:
            self._project_to_resolved()
            precisions = {id(self.log_tau_residual), id(self.log_tau_boundary)}
            lbfgs_params = [p for p in params if lbfgs_learn_precisions or id(p) not in precisions]
            try:
                for round_ in range(lbfgs_rounds):
                    if round_ > 0:
                        with torch.no_grad():
                            self.log_tau_residual += lbfgs_precision_step
                            self.log_tau_boundary += lbfgs_precision_step
                    best["loss"] = math.inf  # the loss changes with the precisions
                    if lbfgs_trust is None:
                        self._lbfgs_b(lbfgs_params, n_lbfgs, evaluate, history, callback)
                        continue
                    done = 0
                    while done < n_lbfgs:
                        chunk = min(lbfgs_trust_every, n_lbfgs - done)
                        self._lbfgs_b(lbfgs_params, chunk, evaluate, history, callback, trust=lbfgs_trust)
                        done += chunk
            except _StopOptimisation:
                pass
            if alternate:
                if best["u"] is not None:
                    with torch.no_grad():
                        self.u.copy_(best["u"])
                self.solve_u()
        return history

    def _bounds(self, param: nn.Parameter, trust: float | None = None) -> list[tuple[float | None, float | None]]:
        """L-BFGS-B bounds per entry of ``param``: the grid-resolved box of :meth:`is_resolved`,
        intersected with the trust box of :meth:`fit` (``lbfgs_trust``) around the current values."""
        for k, fmax, rmax, rmin in zip(self.kernels, self.max_abs_frequency, self.max_rho, self.min_rho):
            if param is k.mu:
                if trust is None:
                    return [(-fmax, fmax)] * param.numel()
                mu = k.mu.detach().double().cpu()
                width = trust * k.log_rho.detach().double().cpu().exp() / (math.sqrt(2.0) * math.pi)
                return [(max(-fmax, float(m - w)), min(fmax, float(m + w))) for m, w in zip(mu, width)]
            if param is k.log_rho:
                low = math.log(rmin) if rmin > 0 else -math.inf
                if trust is None:
                    return [(None if rmin == 0 else low, math.log(rmax))] * param.numel()
                return [(max(low, float(r) - math.log(2.0)), min(math.log(rmax), float(r) + math.log(2.0)))
                        for r in k.log_rho.detach().double().cpu()]
        return [(None, None)] * param.numel()

    def _lbfgs_b(self, params, max_iter, evaluate, history, callback, trust: float | None = None) -> None:
        """scipy's L-BFGS-B on ``params`` (float64 vector round trip; a handful of numbers)."""
        sizes = [p.numel() for p in params]
        bounds = [b for p in params for b in self._bounds(p, trust)]

        def assign(x: np.ndarray) -> None:
            with torch.no_grad():
                for p, chunk in zip(params, np.split(x, np.cumsum(sizes)[:-1])):
                    p.copy_(torch.as_tensor(chunk, dtype=p.dtype, device=p.device).reshape(p.shape))

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            assign(x)
            try:
                loss = evaluate()
            except (NotPositiveDefiniteError, FloatingPointError):
                # Outside the admissible set (a kernel matrix not positive definite, or a
                # collocation system so near singular that the U update overflows): a
                # large loss makes the line search back off.
                return _INADMISSIBLE_LOSS, np.zeros_like(x)
            grads = torch.autograd.grad(loss, params)
            history.append(float(loss.detach()))
            if callback is not None and callback(self, len(history) - 1, history[-1]):
                raise _StopOptimisation
            return history[-1], torch.cat([g.reshape(-1) for g in grads]).detach().cpu().double().numpy()

        # A failed line search ends scipy's run early (status 2), often with most of the
        # budget left and a curvature memory that no longer fits the profile loss (the U
        # updates are exact only to round-off); it restarts from the point reached, with a
        # fresh memory, as long as the last run lowered the loss (1D sin(100x), 400 points:
        # a second round stopped after 2 of 300 iterations at 1.6e-5 in one run, went on
        # to 1.5e-9 in another). With ftol = 0, status 0 is the same stall seen from the
        # other side (a step that did not lower the loss, "relative reduction of f <=
        # factr*epsmch"; gtol = 0 rules out the gradient test): scipy 1.17 ends the first
        # L-BFGS-B round of the 1D Allen-Cahn case there after 18 evaluations of a 300-iteration
        # budget, at 2.4e-6 in the end against 2.4e-9 with the restart (benchmarks/RESULTS.md, GP section).
        remaining = max_iter
        for _ in range(_LBFGS_RESTARTS + 1):
            x0 = torch.cat([p.detach().reshape(-1) for p in params]).cpu().double().numpy()
            start = len(history)
            result = scipy.optimize.minimize(
                fun,
                x0,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": remaining, "maxcor": 50, "ftol": 0.0, "gtol": 0.0, "maxfun": 4 * remaining},
            )
            assign(result.x)
            remaining -= max(int(result.nit), 1)
            improved = len(history) > start + 1 and min(history[start + 1:]) < history[start]
            if result.status not in (0, 2) or remaining <= 0 or not improved:
                break

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def predict(self, *axes: Tensor) -> Tensor:
        r"""Posterior mean :math:`(\otimes_d k_d(x^*_d, X_d) K_d^{-1})\,U` on the tensor grid of ``axes``
        (plus the base's mean, with a ``base``).

        ``axes[d]`` has shape ``(M_d,)``; returns ``(M_1, ..., M_D)``.
        """
        if len(axes) != self.problem.dim:
            raise ValueError(f"expected {self.problem.dim} coordinate vectors, got {len(axes)}")
        return self._mean_and_terms(axes, ())[0]

    @torch.no_grad()
    def _mean_and_terms(self, axes: Sequence[Tensor], terms: Sequence[tuple[int, int, float]] | None = None
                        ) -> tuple[Tensor, list[Tensor]]:
        """The posterior mean on the tensor grid of ``axes`` and each of ``terms`` (``(axis, order,
        coeff)``; default ``problem.linear_terms``) applied to it exactly (kernel derivatives); a
        base's included."""
        terms = self.problem.linear_terms if terms is None else terms
        grams = [k.toeplitz_grams(n, h, order=0)[0] for k, n, h in zip(self.kernels, self.n_points, self.spacings)]
        chol = KroneckerCholesky(grams, self.jitter)

        def row(d: int, order: int) -> Tensor:  # k_d^(order)(x*, X_d) K_d^-1
            return chol.right_solve(d, self.kernels[d].gram(axes[d], self.axes[d], order=order))

        values = [row(d, 0) for d in range(len(axes))]
        u = self.u.detach()
        mean = kron_matmul(values, u)
        applied = [coeff * kron_matmul([row(d, order) if d == axis else v for d, v in enumerate(values)], u)
                   for axis, order, coeff in terms]
        if self.base is not None:
            base_mean, base_applied = self.base._mean_and_terms(axes, terms)
            mean, applied = mean + base_mean, [a + b for a, b in zip(applied, base_applied)]
        return mean, applied

    @torch.no_grad()
    def _test_residual(self, n_test: int | Sequence[int]) -> tuple[list[Tensor], Tensor, Tensor, float]:
        """Test axes, the mean on them, the equation's residual and the scale of :meth:`relative_residual`."""
        axes = self.test_axes(n_test)
        mean, terms = self._mean_and_terms(axes)
        nonlinear = self.problem.nonlinearity(mean)
        if nonlinear is not None:
            terms = [*terms, nonlinear]
        f = self.problem.source(*torch.meshgrid(*axes, indexing="ij"))
        # the size the terms would have for a mean of this size varying over the domain (|c| |m| / L^k): a
        # floor where the source and the terms vanish (a harmonic solution: x, 1 + x, x*y)
        lengths = [float(b - a) for a, b in self.problem.domain]
        natural = [abs(c) * float(mean.norm()) / lengths[d] ** k for d, k, c in self.problem.linear_terms]
        scale = max([float(f.norm())] + [float(t.norm()) for t in terms] + natural + [torch.finfo(f.dtype).tiny])
        return axes, mean, sum(terms) - f, scale

    @torch.no_grad()
    def a_posteriori(self, n_test: int | Sequence[int]) -> tuple[float, float | None]:
        """:meth:`relative_residual` and :meth:`error_estimate` from one evaluation of the residual."""
        axes, mean, residual, scale = self._test_residual(n_test)
        return float(residual.norm()) / scale, self._estimate(axes, mean, residual)

    @torch.no_grad()
    def relative_residual(self, n_test: int | Sequence[int]) -> float:
        r"""The equation's residual of the posterior mean between the collocation points, relative:
        :math:`\|\mathcal L m + n(m) - f\|` over the largest of :math:`\|f\|`, the norms of the terms
        (:math:`c_t \partial^{k_t} m` and :math:`n(m)`: a zero source, as in advection, is fine) and
        :math:`|c_t| \|m\| / L^{k_t}` (the terms' size for a mean varying over the domain: where the source
        and the terms vanish, as for a harmonic solution ``1 + x``, they are no scale) on
        the staggered test grid (:meth:`test_axes`), the derivatives of :math:`m` exact (kernel
        derivatives).

        An a-posteriori check that needs no exact solution: the fit meets the equation on the
        collocation points, and kernels whose collocated derivatives are wrong for the solution
        (``max_lengthscale``) show here as a residual far above the fit's."""
        _, _, residual, scale = self._test_residual(n_test)
        return float(residual.norm()) / scale

    @torch.no_grad()
    def error_estimate(self, n_test: int | Sequence[int]) -> float | None:
        r"""An a-posteriori estimate of the relative :math:`L^2` error, without the exact solution:
        :math:`\|e\| / \|m\|` with :math:`\Delta_h e = r`, :math:`r` the equation's residual of the
        posterior mean on the staggered test grid (:meth:`relative_residual`) and :math:`\Delta_h`
        the 3-point (5-, 7-point) Laplacian on that grid with the mean's misfit of the Dirichlet
        data, :math:`m - g`, as the values of :math:`e` on the domain's faces; solved by per-axis
        eigendecompositions. For operators whose linear part is the Laplacian (Poisson;
        Allen-Cahn, its reaction term left out) with data on every face. For the transport
        equation :math:`e` is integrated along the characteristics instead, from the data's misfit
        where they enter (:meth:`_transport_estimate`): exact but for quadrature and the
        interpolation of the residual; ``sin(x - 20t)`` on 24 x 20 after 20 L-BFGS steps, residual
        1.1e-2, error 6.000e-4, estimate 6.014e-4. None for other operators.

        Where the residual misses a slow error (the equation's residual of a slow part is small
        next to a high-frequency source: 1D ``sin(500x) - 2(x - 0.5)^2`` without the correction,
        residual 2.3e-5, error 0.47) the inverse Laplacian weights it back: estimate 0.41; for
        ``x**2 + sin(40*x)`` 0.19 (error 0.20), for ``x**2`` and ``sin(40*x)`` the error to three
        digits (1.225e-3, 1.282e-10; 200 points)."""
        if not self._has_estimate():
            return None
        axes, mean, residual, _ = self._test_residual(n_test)
        return self._estimate(axes, mean, residual)

    def _has_estimate(self) -> bool:
        """Whether :meth:`error_estimate` applies: transport, or the Laplacian as the linear part with
        data on every face."""
        if isinstance(self.problem, Advection):
            return True
        laplacian = [(d, 2, 1.0) for d in range(self.problem.dim)]
        return sorted(self.problem.linear_terms) == laplacian and all(map(all, self.problem.boundary_sides))

    def _estimate(self, axes: Sequence[Tensor], mean: Tensor, residual: Tensor) -> float | None:
        """:meth:`error_estimate` from the test grid's mean and residual (None where it does not apply)."""
        if not self._has_estimate():
            return None
        if isinstance(self.problem, Advection):
            return self._transport_estimate(axes, mean)
        # the faces' Dirichlet data enter as the boundary values of e: m - g there (the ghost point
        # half a spacing outside makes the face value the mean of the two: a 2 (m - g) / h^2 source)
        residual = residual.clone()
        for d, ((lo, hi), x) in enumerate(zip(self.problem.domain, axes)):
            h = float(x[1] - x[0]) if x.numel() > 1 else float(hi - lo)
            for side, value in ((0, lo), (-1, hi)):
                face = [torch.tensor([float(value)], dtype=x.dtype) if e == d else a for e, a in enumerate(axes)]
                miss = self.predict(*face) - self.problem.exact(*torch.meshgrid(*face, indexing="ij"))
                index = [slice(None)] * len(axes)
                index[d] = slice(0, 1) if side == 0 else slice(-1, None)
                residual[tuple(index)] -= 2.0 * miss / h**2
        bases, eigenvalues = [], []
        for x in axes:
            m, h = x.numel(), float(x[1] - x[0]) if x.numel() > 1 else 1.0
            lap = (torch.diag(torch.full((m,), -2.0, dtype=x.dtype)) + torch.diag(torch.ones(m - 1, dtype=x.dtype), 1)
                   + torch.diag(torch.ones(m - 1, dtype=x.dtype), -1))
            lap[0, 0] = lap[-1, -1] = -3.0  # the face half a spacing outside: the ghost value is minus the inside one
            lam, q = torch.linalg.eigh(lap / h**2)
            bases.append(q)
            eigenvalues.append(lam)
        total = eigenvalues[0]
        for lam in eigenvalues[1:]:
            total = total[..., None] + lam
        e = kron_matmul(bases, kron_matmul([q.T for q in bases], residual) / total)
        return float(e.norm()) / max(float(mean.norm()), torch.finfo(mean.dtype).tiny)

    def _transport_estimate(self, axes: Sequence[Tensor], mean: Tensor) -> float:
        r""":meth:`error_estimate` of the transport equation: the error integrated along the
        characteristics from the inflow face and the initial line
        (:func:`~sciml.solvers.gp.transport.transport_error`), the residual of the mean on a grid
        :data:`_TRANSPORT_REFINE` times finer than the collocation grid, the data's misfit where the
        characteristics enter; at up to :data:`_TRANSPORT_POINTS` test points per axis, evenly picked."""
        problem = self.problem
        grid = [torch.linspace(a, b, _TRANSPORT_REFINE * (n - 1) + 1, dtype=x.dtype, device=x.device)
                for (a, b), n, x in zip(problem.domain, self.n_points, axes)]
        _, terms = self._mean_and_terms(grid)
        residual = sum(terms) - problem.source(*torch.meshgrid(*grid, indexing="ij"))
        picks = [torch.unique(torch.linspace(0, m - 1, min(m, _TRANSPORT_POINTS)).round().long()).to(mean.device)
                 for m in mean.shape]
        x, t = axes[0][picks[0]], axes[1][picks[1]]
        (x0, x1), (t0, _) = problem.domain

        def misfit(xs: Tensor, ts: Tensor) -> Tensor:
            out = torch.empty_like(xs)
            initial = ts == t0
            if initial.any():
                p = xs[initial]
                out[initial] = self.predict(p, ts.new_tensor([t0]))[:, 0] - problem.exact(p, torch.full_like(p, t0))
            if (~initial).any():
                q, edge = ts[~initial], x0 if problem.beta > 0 else x1
                out[~initial] = (self.predict(q.new_tensor([edge]), q)[0]
                                 - problem.exact(torch.full_like(q, edge), q))
            return out

        e = transport_error(problem.beta, problem.domain, grid, residual, misfit, x, t)
        m = mean[picks[0]][:, picks[1]]
        return float(e.norm()) / max(float(m.norm()), torch.finfo(m.dtype).tiny)

    def test_axes(self, n_test: int | Sequence[int]) -> list[Tensor]:
        """Staggered test coordinates: the midpoints of ``n_test + 1`` uniform points per axis."""
        n_test = [n_test] * self.problem.dim if isinstance(n_test, int) else list(n_test)
        out = []
        for (a, b), m, x in zip(self.problem.domain, n_test, self.axes):
            edges = torch.linspace(a, b, m + 1, dtype=x.dtype, device=x.device)
            out.append(0.5 * (edges[1:] + edges[:-1]))
        return out

    @torch.no_grad()
    def relative_error(self, n_test: int | Sequence[int]) -> float:
        r"""Relative :math:`L^2` error :math:`\|u_h - u\| / \|u\|` on a staggered test grid (see
        :func:`relative_norm` for :math:`u = 0`)."""
        axes = self.test_axes(n_test)
        exact = self.problem.exact(*torch.meshgrid(*axes, indexing="ij"))
        return relative_norm(self.predict(*axes) - exact, exact)

    @torch.no_grad()
    def dominant_frequencies(self) -> list[float]:
        r""":math:`|\mu_q|` of the heaviest component of each axis' kernel, cycles per unit length."""
        return [float(k.mu[k.log_weight.argmax()].abs()) for k in self.kernels]


def relative_norm(error: torch.Tensor, reference: torch.Tensor) -> float:
    r""":math:`\|e\| / \|u\|`, with 0 for an exact answer to :math:`u = 0` and inf for a wrong one (no NaN)."""
    e, u = float(error.norm()), float(reference.norm())
    if u == 0.0:
        return 0.0 if e == 0.0 else math.inf
    return e / u


@torch.no_grad()
def _factorable_jitter(kernels: Sequence[SpectralMixture1D], n_points: Sequence[int], spacings: Sequence[float],
                       *, smallest: float = 1e-14, largest: float = 1e-4, broadening: float = 4.0) -> float:
    """The smallest power-of-ten jitter from ``smallest`` up at which every kernel's Gram matrix, and the
    same kernel with its length scales ``broadening`` times longer, has a Cholesky factor."""
    grams = []
    for k, n, h in zip(kernels, n_points, spacings):
        broad = copy.deepcopy(k)
        broad.log_rho -= math.log(broadening)
        grams += [k.toeplitz_grams(n, h, order=0)[0], broad.toeplitz_grams(n, h, order=0)[0]]
    jitter = smallest
    while jitter <= largest:
        try:
            KroneckerCholesky(grams, jitter)
            return jitter
        except NotPositiveDefiniteError:
            jitter *= 10.0
    raise NotPositiveDefiniteError(f"no jitter up to {largest:g} gives the correction's kernels a Cholesky factor")


def _gaussian_loglik(r: Tensor, log_tau: Tensor) -> Tensor:
    r""":math:`\sum_i \log \mathcal N(r_i \mid 0, \tau^{-1})`."""
    m = r.numel()
    return 0.5 * m * (log_tau - math.log(2.0 * math.pi)) - 0.5 * log_tau.exp() * r.square().sum()


def _gaussian_loglik_given_multipliers(r: Tensor, log_tau: Tensor, multipliers: Tensor) -> Tensor:
    r""":func:`_gaussian_loglik`'s value, with :math:`\tau r` replaced by ``multipliers`` (:math:`\lambda`) in its gradient.

    Gradient in :math:`r`: :math:`-\lambda` (not :math:`-\tau r`); in :math:`\log\tau`:
    :math:`m/2 - \|\lambda\|^2 / (2\tau)` (not :math:`m/2 - \tau\|r\|^2/2`)."""
    lam = multipliers.detach()
    tau = log_tau.detach().exp()
    value = _gaussian_loglik(r.detach(), log_tau.detach())
    first_order = (lam * (r - r.detach())).sum() + (0.5 * lam.square().sum() / tau) * (log_tau - log_tau.detach())
    m = r.numel()
    return value + 0.5 * m * (log_tau - log_tau.detach()) - first_order


def _outer(vectors: Sequence[Tensor]) -> Tensor:
    """Outer product of per-axis vectors: the diagonal of a Kronecker product of matrices."""
    out = vectors[0]
    for v in vectors[1:]:
        out = out[..., None] * v
    return out


def _outer_sum(vectors: Sequence[Tensor]) -> Tensor:
    """Outer sum of per-axis vectors: the diagonal of a Kronecker sum of diagonal matrices."""
    out = vectors[0]
    for v in vectors[1:]:
        out = out[..., None] + v
    return out


def _diagonal_in_basis(a: Tensor, x: Tensor) -> Tensor:
    """The (real) diagonal of :math:`X^H A X` for a real symmetric ``a`` and a real or complex basis ``x``."""
    return ((a.to(x.dtype) @ x) * x.conj()).sum(0).real


class _WhitenedNormalEquations:
    r"""The U update as :math:`(I + M^T M) V = M^T W^{1/2} h` with :math:`U = (\otimes_d R_d) V`.

    :math:`K_d + \varepsilon I = Q_d S_d Q_d^T` (eigendecomposition), :math:`R_d = Q_d S_d^{1/2}`,
    so the prior is :math:`\tfrac12\|V\|^2`, and :math:`M = W^{1/2} C (\otimes_d R_d)` with
    :math:`C U = (AU)_I` on the collocation block and :math:`U_B` elsewhere. Along axis d,
    :math:`E_d R_d = G_d Q_d S_d^{-1/2} =: B_d`, so :math:`A (\otimes R) = \sum_d R_1 \otimes
    \dots B_d \dots \otimes R_D`: every product is a sequence of axis-wise matmuls. The
    Jacobi preconditioner, the diagonal of :math:`I + M^T M`, is exact: the diagonal of a
    Kronecker product is the outer product of the factors' diagonals, and the collocation
    block is a tensor product of index ranges. In the eigenbasis of a Toeplitz
    :math:`K_d`, :math:`B_d^T B_d` is nearly diagonal (Toeplitz matrices nearly commute),
    which is why this preconditioner works.
    """

    def __init__(self, chols, grams, interior, mask, w_sqrt, diag: Tensor | None = None):
        self.diag = diag  # pointwise term of the collocation operator, A + diag(d) (Gauss-Newton); zero off I
        self.r, self.r_inv, self.b = [], [], []
        for c, g in zip(chols, grams):
            s, q = torch.linalg.eigh(c @ c.mT)
            s = s.clamp_min(torch.finfo(s.dtype).tiny)
            self.r.append(q * s.sqrt())
            self.r_inv.append(q.mT / s.sqrt()[:, None])
            self.b.append(None if g is None else (g @ q) / s.sqrt())
        self.interior, self.mask, self.w_sqrt = interior, mask, w_sqrt
        self.r_t = [r.mT for r in self.r]
        self.blocks = _BoundaryBlock.partition(interior, mask.shape, mask.device)
        terms = [d for d, b in enumerate(self.b) if b is not None]
        dim = len(self.r)

        def factor(d, a):
            return self.b[a] if a == d else self.r[a]

        diag_interior = 0.0
        for d in terms:
            for e in terms:
                diag_interior = diag_interior + _outer(
                    [(factor(d, a)[interior[a]] * factor(e, a)[interior[a]]).sum(0) for a in range(dim)]
                )
        diag_all_r = _outer([(r * r).sum(0) for r in self.r])
        diag_interior_r = _outer([(r[interior[a]] ** 2).sum(0) for a, r in enumerate(self.r)])
        tau_r = w_sqrt[mask].reshape(-1)[0] ** 2 if bool(mask.any()) else 0.0
        tau_b = w_sqrt[~mask].reshape(-1)[0] ** 2 if bool((~mask).any()) else 0.0
        self.jacobi_diag = 1.0 + tau_r * diag_interior + tau_b * (diag_all_r - diag_interior_r)
        self._terms = terms

    def whiten(self, u: Tensor) -> Tensor:
        return kron_matmul(self.r_inv, u)

    def unwhiten(self, v: Tensor) -> Tensor:
        return kron_matmul(self.r, v)

    def _m(self, v: Tensor) -> Tensor:
        # Collocation rows: A R V on the whole grid; Dirichlet rows: (R V) on the boundary
        # blocks only (thin products, O(N * boundary) instead of a full Kronecker product).
        au = torch.zeros_like(v)
        for d in self._terms:
            au = au + kron_matmul([self.b[a] if a == d else r for a, r in enumerate(self.r)], v)
        if self.diag is not None:
            au = au + self.diag * kron_matmul(self.r, v)
        out = torch.where(self.mask, self.w_sqrt * au, torch.zeros_like(au))
        for block in self.blocks:
            out[block.index] = self.w_sqrt[block.index] * block.rows(self.r, v)
        return out

    def _mt(self, y: Tensor) -> Tensor:
        z = self.w_sqrt * y
        zi = torch.where(self.mask, z, torch.zeros_like(z))
        out = torch.zeros_like(z)
        for d in self._terms:
            out = out + kron_matmul([self.b[a].mT if a == d else r.mT for a, r in enumerate(self.r)], zi)
        if self.diag is not None:
            out = out + kron_matmul(self.r_t, self.diag * zi)
        for block in self.blocks:
            out = out + block.cols(self.r_t, z[block.index])
        return out

    def normal_matvec(self, v: Tensor) -> Tensor:
        return v + self._mt(self._m(v))

    def rhs(self, h: Tensor) -> Tensor:
        return self._mt(self.w_sqrt * h)

    def jacobi(self, r: Tensor) -> Tensor:
        return r / self.jacobi_diag


class _FastDiagonalisationPreconditioner:
    r"""Approximate inverse of :math:`I + M^T M` from per-axis eigendecompositions of the collocation block.

    In the original variables the normal matrix is :math:`\mathcal K^{-1} + C^T W C`
    (:math:`V`-space: :math:`R^T(\cdot)R`). Its block on the collocation set
    :math:`I = I_1 \times \dots \times I_D` (a tensor product of index ranges) is
    *exactly*

    .. math::

        N_{II} = \bigotimes_d P_d + \tau_r\, \hat E^T \hat E, \qquad
        P_d = [(K_d + \varepsilon I)^{-1}]_{I_d I_d}, \qquad
        \hat E = \bigoplus_d \hat E_d, \quad \hat E_d = [E_d]_{I_d I_d},

    a Kronecker product plus the square of a Kronecker sum. A preconditioner in
    :math:`V` follows from one in :math:`U` as :math:`R^{-1} \Pi_U R^{-T}`. Two
    variants, chosen by the axis blocks:

    **Even-order terms only** (Poisson, Allen–Cahn). With the symmetric parts
    :math:`\tfrac12(\hat E_d + \hat E_d^T) = \hat Q_d \Lambda_d \hat Q_d^T` (on a uniform
    grid :math:`E_d = G_d K_d^{-1}` is a product of nearly commuting Toeplitz
    matrices, so for even-order terms nearly symmetric), :math:`\hat E^T\hat E \approx
    \hat Q (\oplus_d \Lambda_d)^2 \hat Q^T` with :math:`\hat Q = \otimes_d \hat Q_d`, and
    :math:`\otimes_d P_d` is replaced by its diagonal in that basis: the inverse is then
    two axis-wise basis changes and a division. The Dirichlet rows get the exact
    diagonal of the normal matrix, :math:`\lambda_b\tau_b + \mathrm{diag}\,\mathcal K^{-1}
    + \tau_r\,\mathrm{diag}(A^T P_I A)` (:func:`_equation_diagonal`; the last term, the
    equation rows next to the boundary, was left out at first and put eigenvalues of
    the preconditioned matrix up to 68 on a 40² grid, 3 with it); the coupling between
    the two blocks is left to CG.

    Measured (2D Poisson, Gaussian mixture, 30 components, tolerance 1e-10, cold start):
    24 x 24 ``sin(2x) sin(3y)``: 21 CG iterations against 468 with Jacobi, and the
    same U as the dense QR solve to 2e-12; ``sin(100x) sin(100y)`` at 300², initial
    kernels: 42 iterations (62 without the equation term in the boundary diagonal).
    What keeps it from being exact (dense study, 40² and 50² grids): the interior
    block alone is approximated well (preconditioned spectrum in [0.49, 2.04], 98 %
    of it in [0.96, 1.04]); the rest is the interior–boundary coupling. The exact
    Schur complement on the boundary is :math:`\approx \lambda_b\tau_b I`, so a block
    elimination with the exact interior inverse is exact; with this approximate
    interior inverse, applied to the large coupling block, it left 9–24 outlying
    eigenvalues and was no faster than CG. The lifting below removes the coupling
    without that amplification, and in 3D it is needed (``benchmarks/gp_preconditioner.py``:
    CG to 1e-8 from U = 0): 3D Poisson ``sin(20x) sin(20y) sin(20z)``, 64³, spectrum
    start: 27 iterations, lifted 7; with the kernels sharpened as a fit leaves them (one
    component per axis, weight 0.03, ρ = 0.005, the rest 1e-30): 965 iterations (89 s
    CPU), lifted 4 (0.8 s). In 2D the plain variant holds (300², ``sin(100x)
    sin(100y)``: 23 / 7 iterations at the start, 1.0 / 0.9 s; sharpened 5 / 6, 0.3 /
    0.8 s), so the lifted variant is the default from three axes on (``lift``).

    **A first-order axis** (advection :math:`u_t + \beta u_x`). Its block is nearly
    antisymmetric and non-normal. Per axis the eigendecomposition of the whole block,
    :math:`\hat E_d = X_d \Lambda_d X_d^{-1}` (complex; conjugate pairs; unit columns),
    gives :math:`\hat E = X (\oplus_d \Lambda_d) X^{-1}` *exactly*, :math:`X = \otimes_d
    X_d`. Two changes:

    * lifting of the Dirichlet values: the equation rows couple them to the interior by
      :math:`\tau_r \hat E^T A_{IB}`, far more than :math:`\lambda_b\tau_b` pins them, and
      a boundary change costs only :math:`\approx\lambda_b\tau_b` if the interior follows
      it, :math:`\delta U_I = L\,\delta U_B`, :math:`L = -\hat E_\mathrm{reg}^{-1} A_{IB}`
      (:math:`\hat E_\mathrm{reg}^{-1} = X\,\tau_r\bar\Lambda_\oplus D^{-1} X^{-1}`, the
      Tikhonov inverse with the prior's diagonal :math:`D` below). With :math:`T = [I,\
      L;\ 0,\ I]`, :math:`\Pi_U = T\,\mathrm{diag}(\tilde N_{II}^{-1}, (\lambda_b\tau_b +
      \mathrm{diag}\,\mathcal K^{-1}_{BB})^{-1})\,T^T`, symmetric positive definite by
      construction (both :math:`L` products take the real part of the same complex
      matrix, :math:`\mathrm{Re}(M)^T = \mathrm{Re}(M^T)`);
    * interior :math:`\tilde N_{II}`: while the eigenvectors are well conditioned
      (:math:`\max_d \mathrm{cond}(X_d) \le 10`), :math:`N_{II} \approx X^{-H} D X^{-1}`,
      :math:`D = \mathrm{diag}(X^H (\otimes P_d) X) + \tau_r |\textstyle\sum_d
      \Lambda_d|^2`, exact up to the non-orthogonality of :math:`X`; the cross terms
      stay (for advection :math:`|\beta\lambda_x + \lambda_t|^2`, small along the
      characteristics). Its inverse is :math:`\mathrm{Re}(X D^{-1} X^H)`: the real
      part of a Hermitian positive definite matrix is symmetric positive definite, and
      equals the complex product up to round-off as :math:`D` takes the same value on
      conjugate eigenvector pairs. Sharp kernels make :math:`\hat E_d` strongly
      non-normal (:math:`\mathrm{cond}(X_t)` 71 in the sharp-kernel test) and this approximation
      poor; then the orthonormal eigenbases of :math:`\hat E_d^T \hat E_d` are used,
      cross terms dropped, as in the earlier version (the lifting stays).

    Per application: two full :math:`R^{-1}` products, two products with :math:`A`,
    four complex axis-wise basis changes on the interior (two more real ones with the
    orthonormal bases). Measured by the tests (``tests/solvers/gp/test_gp_solver.py``,
    CG to 1e-10 from U = 0, ``sin(x - 20 t)`` on 24 x 20): 2 iterations with the case's
    right-hand side and 9 with a random source, against 747 and 717 with Jacobi; with
    sharp kernels 59 against 510. The earlier treatment of first-order axes
    (:math:`\mathrm{eigh}(\hat E_d^T \hat E_d)`, cross terms dropped, no lifting) took 54
    against Jacobi's 133 on 12 x 10 and did not reach 1e-10 on the 200² case in the
    exact U updates of ``cases/gp_advection.yaml``; the unitary eigenbasis of the
    antisymmetric part alone (cross terms kept, no lifting) was tried and was no better:
    what limited the earlier version was the interior–boundary coupling, not the
    interior approximation.
    """

    def __init__(self, system: "_WhitenedNormalEquations", chols, axis_ops, interior, mask, tau_r, tau_b,
                 shift: float = 0.0, interior_basis: str = "auto", lift: bool | None = None):
        """``shift``: a pointwise term of the operator, by its mean (Gauss-Newton). ``interior_basis``
        (lifted variant): ``"eig"``, ``"orthonormal"`` or ``"auto"`` (by the eigenvectors' condition
        number). ``lift``: use the lifted variant; default (None) where an axis is first-order or
        the grid has three or more axes."""
        if interior_basis not in ("auto", "eig", "orthonormal"):
            raise ValueError(f"interior_basis must be 'auto', 'eig' or 'orthonormal' (got {interior_basis!r})")
        self.system, self.interior, self.mask = system, interior, mask
        self.r_inv, self.r_inv_t = system.r_inv, [ri.mT for ri in system.r_inv]
        self.blocks = system.blocks
        blocks = [e[rng, rng] for e, rng in zip(axis_ops, interior)]
        odd = [bool(torch.linalg.matrix_norm(b - b.mT) > torch.linalg.matrix_norm(b + b.mT)) for b in blocks]
        kinvs = [torch.cholesky_inverse(c) for c in chols]
        kinv_diag = _outer([k.diagonal() for k in kinvs])
        # an odd-order block is nearly antisymmetric: |skew part| > |symmetric part|
        self.lifted = (any(odd) or len(blocks) >= 3) if lift is None else bool(lift)
        if self.lifted:
            self._init_lifted(kinvs, kinv_diag, axis_ops, blocks, odd, tau_r, tau_b, shift, interior_basis)
            return
        bases, signed, p_diag = [], [], []
        for kinv, block, rng in zip(kinvs, blocks, interior):
            lam, q = torch.linalg.eigh(0.5 * (block + block.mT))  # E_d^T E_d ~ lam^2, cross terms 2 lam_d lam_e kept
            signed.append(lam)
            bases.append(q)
            p_diag.append(_diagonal_in_basis(kinv[rng, rng], q))
        total = _outer_sum(signed) + shift  # a pointwise term of the operator, by its mean (Gauss-Newton)
        self.interior_diag = _outer(p_diag) + tau_r * total.square()
        self.boundary_diag = tau_b + kinv_diag + tau_r * _equation_diagonal(axis_ops, interior)
        # R^{-T} restricted to the collocation rows and followed by the basis change, and
        # back, as one matrix per axis; the boundary rows go through thin products.
        r_inv = system.r_inv
        self.to_basis = [q.mT @ ri.mT[rng] for q, ri, rng in zip(bases, r_inv, interior)]
        self.from_basis = [ri[:, rng] @ q for q, ri, rng in zip(bases, r_inv, interior)]

    def _init_lifted(self, kinvs, kinv_diag, axis_ops, blocks, odd, tau_r, tau_b, shift, interior_basis):
        xs, values, p_diag = [], [], []
        for kinv, block, rng in zip(kinvs, blocks, self.interior):
            lam, x = torch.linalg.eig(block)
            xs.append(x)
            values.append(lam)
            p_diag.append(_diagonal_in_basis(kinv[rng, rng], x))
        total = _outer_sum(values) + shift
        self.interior_diag = _outer(p_diag) + tau_r * total.abs().square()
        self.lift_filter = tau_r * total.conj() / self.interior_diag  # Tikhonov inverse of sum_d Lambda_d
        self.boundary_diag = tau_b + kinv_diag
        self.x, self.x_t = xs, [x.mT for x in xs]
        self.x_inv = [torch.linalg.inv(x) for x in xs]
        self.x_inv_t = [xi.mT for xi in self.x_inv]
        self.axis_ops, self.axis_ops_t = axis_ops, [e.mT for e in axis_ops]
        self.x_cond = [float(torch.linalg.cond(x)) for x in xs]
        self.q = None  # orthonormal interior bases, if used
        if interior_basis == "eig" or (interior_basis == "auto" and max(self.x_cond) <= _MAX_EIGVEC_COND):
            return
        qs, signed, squares, q_diag = [], [], [], []
        for kinv, block, rng, is_odd in zip(kinvs, blocks, self.interior, odd):
            zero = torch.zeros(block.shape[0], dtype=block.dtype, device=block.device)
            if is_odd:  # E_d^T E_d ~ its eigenvalues; this axis's cross terms dropped
                sq, q = torch.linalg.eigh(block.mT @ block)
                signed.append(zero)
                squares.append(sq.clamp_min(0.0))
            else:
                lam, q = torch.linalg.eigh(0.5 * (block + block.mT))
                signed.append(lam)
                squares.append(zero)
            qs.append(q)
            q_diag.append(_diagonal_in_basis(kinv[rng, rng], q))
        total, total_sq = _outer_sum(signed) + shift, _outer_sum(squares)
        self.q, self.q_t = qs, [q.mT for q in qs]
        self.q_diag = _outer(q_diag) + tau_r * (total.square() + total_sq)

    def __call__(self, r: Tensor) -> Tensor:
        if self.lifted:
            return self._lifted(r)
        z = kron_matmul(self.to_basis, r) / self.interior_diag
        out = kron_matmul(self.from_basis, z)
        for block in self.blocks:
            y = block.rows(self.r_inv_t, r) / self.boundary_diag[block.index]
            out = out + block.cols(self.r_inv, y)
        return out

    def _lifted(self, r: Tensor) -> Tensor:
        r""":math:`R^{-1} T\,\mathrm{diag}(\tilde N_{II}^{-1}, S^{-1})\,T^T R^{-T} r`."""
        inner = self.interior
        y = kron_matmul(self.r_inv_t, r)
        w = kron_matmul(self.x_t, y[inner].to(self.lift_filter.dtype))  # X^T y_I; X^H y_I is its conjugate
        t = torch.zeros_like(y)
        t[inner] = kron_matmul(self.x_inv_t, self.lift_filter * w).real  # E_reg^{-T} y_I
        at = sum(apply_along(d, e, t) for d, e in enumerate(self.axis_ops_t))
        z = torch.where(self.mask, torch.zeros_like(y), (y - at) / self.boundary_diag)  # S^{-1}(y_B + L^T y_I)
        az = sum(apply_along(d, e, z) for d, e in enumerate(self.axis_ops))
        v = kron_matmul(self.x_inv, az[inner].to(w.dtype))
        if self.q is None:  # N~^{-1} y_I + L z_B
            z[inner] = kron_matmul(self.x, w.conj() / self.interior_diag - self.lift_filter * v).real
        else:
            z[inner] = (kron_matmul(self.q, kron_matmul(self.q_t, y[inner]) / self.q_diag)
                        - kron_matmul(self.x, self.lift_filter * v).real)
        return kron_matmul(self.r_inv, z)


@dataclass(frozen=True)
class _BoundaryBlock:
    r"""One tensor-product block :math:`J = J_1 \times \dots \times J_D` of the Dirichlet points.

    The complement of the collocation block :math:`I = I_1 \times \dots \times I_D` is
    the disjoint union over axes a of :math:`I_1 \times \dots \times I_{a-1} \times
    (\text{ends of axis } a) \times \text{all} \times \dots`, so Kronecker products
    restricted to it (rows) or applied to fields supported on it (columns) are thin.
    """

    axes: tuple[Tensor, ...]  # index vector per axis
    index: tuple[Tensor, ...]  # the same, shaped to index a grid tensor (open mesh)

    @staticmethod
    def partition(interior: Sequence[slice], sizes: Sequence[int], device) -> list["_BoundaryBlock"]:
        blocks = []
        full = [torch.arange(n, device=device) for n in sizes]
        inner = [f[rng] for f, rng in zip(full, interior)]
        for a, n in enumerate(sizes):
            keep = torch.ones(n, dtype=torch.bool, device=device)
            keep[interior[a]] = False
            ends = full[a][keep]
            if ends.numel() == 0:
                continue
            axes = tuple(inner[:a]) + (ends,) + tuple(full[a + 1 :])
            index = tuple(
                ix.reshape([-1 if k == j else 1 for k in range(len(sizes))]) for j, ix in enumerate(axes)
            )
            blocks.append(_BoundaryBlock(axes, index))
        return blocks

    def rows(self, mats: Sequence[Tensor], u: Tensor) -> Tensor:
        r""":math:`[(\otimes_d A_d) U]_J`, the shrinking axes first."""
        sub = [m[ix] for m, ix in zip(mats, self.axes)]
        return _kron_ordered(sub, u)

    def cols(self, mats: Sequence[Tensor], x: Tensor) -> Tensor:
        r""":math:`(\otimes_d A_d) X` for X supported on J (given as its block values)."""
        sub = [m[:, ix] for m, ix in zip(mats, self.axes)]
        return _kron_ordered(sub, x)


def _kron_ordered(mats: Sequence[Tensor], u: Tensor) -> Tensor:
    """:func:`kron_matmul` with the axes taken in order of growth (rows / columns): cheapest first."""
    order = sorted(range(len(mats)), key=lambda d: mats[d].shape[0] / mats[d].shape[1])
    for d in order:
        u = apply_along(d, mats[d], u)
    return u


def _equation_diagonal(axis_ops: Sequence[Tensor], interior: Sequence[slice]) -> Tensor:
    r"""The diagonal of :math:`A^T P_I A` on the whole grid, :math:`A = \bigoplus_d E_d`, :math:`P_I` the collocation mask.

    :math:`A^T P_I A = \sum_{d,e} \bigotimes_a X^{(d)T}_a P_a X^{(e)}_a` with
    :math:`X^{(d)}_a = E_a` if :math:`a = d` else :math:`I`, and :math:`P_a` the mask of
    axis a's collocation range: its diagonal is a sum of outer products of per-axis
    column sums over the collocation rows.
    """
    eyes = [torch.eye(e.shape[0], dtype=e.dtype, device=e.device) for e in axis_ops]
    dim = len(axis_ops)
    out = 0.0
    for d in range(dim):
        for e in range(dim):
            cols = []
            for a in range(dim):
                x = axis_ops[a] if a == d else eyes[a]
                y = axis_ops[a] if a == e else eyes[a]
                cols.append((x[interior[a]] * y[interior[a]]).sum(0))
            out = out + _outer(cols)
    return out


def _probed_cg(matvec, rhs: Tensor, preconds: dict, x0: Tensor, tol: float, max_iter: int,
               probe: int = _PROBE_ITERATIONS) -> tuple[Tensor, int, float, str]:
    r"""Preconditioned CG with the better of several preconditioners; returns (solution,
    iterations of all candidates, relative residual, the chosen one's name).

    Each candidate runs ``probe`` iterations from ``x0``; the one whose iterate has the lower CG
    objective :math:`\phi(x) = \tfrac12 x^T N x - b^T x = -\tfrac12 x^T (b + r)` goes on from
    its iterate (a restart) for the rest of ``max_iter``. :math:`\phi` decreases monotonically
    in CG and :math:`\phi(x) - \phi(x^*) = \tfrac12 \|x - x^*\|_N^2`, so it compares the
    candidates' errors in the norm CG minimises; the residual norm, dominated by the largest
    eigenvalues of :math:`N`, does not.
    """
    if len(preconds) == 1:
        (name, precond), = preconds.items()
        return (*_preconditioned_cg(matvec, rhs, precond, x0, tol, max_iter), name)
    best = None
    spent = 0
    for name, precond in preconds.items():
        x, it, rel = _preconditioned_cg(matvec, rhs, precond, x0, tol, min(probe, max_iter))
        spent += it
        if rel <= tol:
            return x, spent, rel, name
        objective = -0.5 * float((x * (2.0 * rhs - matvec(x))).sum())
        if best is None or objective < best[0]:
            best = (objective, name, x)
    _, name, x = best
    x, it, rel = _preconditioned_cg(matvec, rhs, preconds[name], x, tol, max(max_iter - probe, 0))
    return x, spent + it, rel, name


def _preconditioned_cg(matvec, rhs: Tensor, precond, x0: Tensor, tol: float, max_iter: int,
                       give_up: tuple[int, float] | None = None):
    """Preconditioned CG on grid-shaped tensors; returns (solution, iterations, relative residual).

    ``give_up = (k, level)``: stop after iteration ``k`` if the relative residual is still above
    ``level`` (a solve that will not converge in ``max_iter``, for a caller with a fallback).

    Hand-written rather than ``linear_operator.utils.linear_cg`` because that one
    works on flat ``(N, k)`` columns, takes defaults from global settings and does
    not report the iteration count or the residual it stopped at.
    """
    b_norm = float(rhs.norm())
    if b_norm == 0.0:
        return torch.zeros_like(rhs), 0, 0.0
    x = x0.clone()
    r = rhs - matvec(x)
    rel = float(r.norm()) / b_norm
    if rel <= tol:
        return x, 0, rel
    z = precond(r)
    p = z.clone()
    rz = (r * z).sum()
    it = 0
    for it in range(1, max_iter + 1):
        ap = matvec(p)
        alpha = rz / (p * ap).sum()
        x = x + alpha * p
        r = r - alpha * ap
        rel = float(r.norm()) / b_norm
        if rel <= tol or (give_up is not None and it >= give_up[0] and rel > give_up[1]):
            break
        z = precond(r)
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it, rel
