"""Solve a PDE with a manufactured solution by GP-HM (Kronecker GP PDE solver).

Case kind ``gp_pde``. Builds a :class:`~sciml.solvers.gp.GPPDESolver` for a Poisson,
Allen–Cahn or advection problem whose exact solution is given as an expression,
optimises it in phases (Adam, then ``lbfgs.rounds`` L-BFGS-B runs with the
log-precisions raised by ``lbfgs.precision_step`` between runs), and reports the
relative L2 error of the *final iterate* (not the best of several checkpoints) on a
test grid staggered from the collocation grid.

The test grid has at least ``test.points_per_period`` points per period of the
highest frequency the solver *learned*: per axis, the largest :math:`|\\mu_q|` among
the components carrying at least 1 % of that axis' kernel weight (always below the
grid's Nyquist frequency, where the solver keeps its kernels). The true frequency is
not used: the case knows the solution only as an expression.

``correction`` adds the paper's extra GP after the main phases: a second GP with one
broad kernel component per axis fits what the main mean leaves of the equation and the
boundary data, and the reported solution is the sum of the two means
(:meth:`~sciml.solvers.gp.GPPDESolver.correction`); ``metrics.json`` then keeps the main
fit's error as ``correction.relative_l2_before``. A ``correction:`` block (``when: always``, a
block's default) runs it always; without one (``when: auto``) it runs only where the main fit's
estimated error (below) is above 1e-3 and is kept only where it lowers it (``correction.kept``); ``correction: null``
never runs it.

Kernels free to become pure sinusoids reproduce a sine's derivatives to round-off, but can also
make the collocated derivatives of a slow, non-periodic part of the solution wrong: the equation
is then met on the collocation points and not between them (1D ``x**2 + sin(40*x)``: relative
L2 0.2). The case checks its fit without the exact solution: ``relative_residual_test`` is the
equation's residual of the posterior mean on the staggered test grid (exact kernel derivatives),
relative to the largest of the source and the equation's terms, and ``error_estimate`` the
relative error that residual implies through the inverse Laplacian (Poisson, Allen-Cahn) or,
for advection, integrated along the characteristics
(:meth:`~sciml.solvers.gp.GPPDESolver.error_estimate`). Above
``kernel.retry_above`` (``auto``: 1e-3 without a correction, no refit with one) the estimate
makes the case fit again from the start with the length scales bounded by the axis length and
keep the fit with the smaller estimate (``metrics.json``: ``retry``); ``kernel.max_lengthscale``
bounds them from the start. Neither runs on the residual alone, which overstates the error
of a good transport fit (the shipped advection case: 1.1e-3 at an error of 7.7e-6).

A checkpoint is written at the end of every phase (the solver's state, the phase
index, the step count and the wall time so far); ``sciml resume DIR`` continues
with the next phase.

Outputs: ``metrics.json`` (``relative_l2``, ``dominant_frequencies`` — cycles per
unit length, one per axis —, ``wall_time_s``, ``iterations``, ...), ``plots/``
(solution, error, learned spectrum) and ``fields.pvd`` (posterior mean, exact
solution and error on the test grid; a 1D field is written as an ``(n, 1)`` image).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal, Optional, Union

from pydantic import Field, PositiveFloat, ValidationInfo, field_validator, model_validator

from sciml.config import NumberExpr, Schema, number_as_text

__all__ = ["Config", "run", "build_problem", "build_solver", "build_correction", "n_test_points"]

_VARIABLES = {"poisson": ("x", "y", "z"), "allen_cahn": ("x", "y", "z"), "advection": ("x", "t")}
_WEIGHT_SHARE = 0.01  # components counted by the test-grid rule: >= 1 % of the axis' kernel weight
_RETRY_LENGTHSCALE = 1.0  # kernel.retry_above: the refit's bound on the length scales, in axis lengths
_RETRY_ABOVE = 1e-3  # kernel.retry_above: auto
_MAX_POINTS_AXIS = 20000  # n_points per axis: one dense (n, n) kernel factor per axis
_MAX_POINTS = 2**24  # n_points in all: the length of U (256³)


# --------------------------------------------------------------------------- schema
class Problem(Schema):
    equation: Literal["poisson", "allen_cahn", "advection"]
    beta: Optional[NumberExpr] = Field(None, description="advection speed (advection only)")
    domain: list[tuple[NumberExpr, NumberExpr]] = Field(
        ..., min_length=1, max_length=3, description="[a, b] per axis; advection: [[x0, x1], [t0, t1]]"
    )
    solution: str = Field(..., description="exact solution, e.g. sin(100*x); source and boundary data follow")

    @field_validator("domain")
    @classmethod
    def _intervals(cls, value: list) -> list:
        for a, b in value:
            if not a < b:
                raise ValueError(f"each interval must have a < b (got [{a:g}, {b:g}])")
            if max(abs(a), abs(b)) > 1e12 or b - a < 1e-9 * max(1.0, abs(a), abs(b)):
                raise ValueError(f"each interval must lie within [-1e12, 1e12] and be at least 1e-9 long (and "
                                 f"1e-9 of its end points' magnitude) (got [{a:g}, {b:g}])")
        return value

    _solution_text = field_validator("solution", mode="before")(number_as_text)  # solution: 1 is "1"

    @field_validator("solution")
    @classmethod
    def _parsable(cls, value: str, info: ValidationInfo) -> str:
        from sciml.solvers.gp.problems import parse_expression

        equation = info.data.get("equation", "poisson")
        names = _VARIABLES.get(equation, ("x", "y", "z"))
        domain = info.data.get("domain")
        if domain is not None and equation != "advection":
            names = names[: len(domain)]
        parse_expression(value, names, equation)  # ValueError -> "problem.solution: ..."
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Problem":
        if self.equation == "advection":
            if self.beta is None:
                raise ValueError("beta: advection needs beta")
            if len(self.domain) != 2:
                raise ValueError(f"domain: advection needs [[x0, x1], [t0, t1]] (got {len(self.domain)} intervals)")
        elif self.beta is not None:
            raise ValueError(f"beta: for advection only (equation is {self.equation})")
        return self


class Kernel(Schema):
    family: Literal["gaussian", "student_t"] = "gaussian"
    n_components: int = Field(30, ge=1, le=500)
    jitter: float = Field(1e-6, ge=0)
    max_lengthscale: Optional[PositiveFloat] = Field(
        None, description="keep every component's length scale at most this many axis lengths (default: free; "
        "a free component can become a pure sinusoid)")
    retry_above: Union[PositiveFloat, Literal["auto"], None] = Field(
        "auto", description="with max_lengthscale unset: when the fit's estimated relative error (error_estimate) "
        "exceeds this, fit again from the start with max_lengthscale 1 and keep the fit with the smaller one; "
        "auto: 1e-3, but never where a "
        "correction block (when: always) follows (the correction fits what the main fit leaves); null: never")
    init: Literal["uniform", "spectrum"] = Field(
        "uniform", description="uniform: frequencies spread over [0, Nyquist] (the authors spread them over a range set "
        "by hand per problem); spectrum: the "
        "strongest peaks of the source's and the boundary data's spectra lead, the rest spread as in uniform",
    )
    max_peaks: Optional[int] = Field(None, ge=0, description="init: spectrum: at most this many peak components "
                                     "per axis (default n_components // 3)")
    peak_share: Optional[float] = Field(None, gt=0, lt=1, description="init: spectrum: the peaks' share of the "
                                        "initial kernel weight (default: equal weights for all components)")

    @model_validator(mode="after")
    def _peaks_fit(self) -> "Kernel":
        if self.max_peaks is not None and self.max_peaks >= self.n_components:
            raise ValueError(f"max_peaks: must be below n_components = {self.n_components} (got {self.max_peaks})")
        return self


class Adam(Schema):
    steps: int = Field(100, ge=0)
    lr: float = Field(1e-2, gt=0)


AUTO_TRUST = 0.5  # L-BFGS-B trust box (``lbfgs.trust: auto``) where the U update is iterative


class LBFGS(Schema):
    iterations: int = Field(300, ge=0, description="iteration cap of each L-BFGS-B run")
    rounds: int = Field(2, ge=1, description="L-BFGS-B runs")
    precision_step: float = Field(1.0, description="log-precision raise between runs")
    trust: Union[Literal["auto"], PositiveFloat, None] = Field(
        "auto",
        description="trust box for the kernels, in spectral standard deviations per component; "
        f"null: off; auto: {AUTO_TRUST} where the U update is iterative (grids past dense_limit), off where it is dense",
    )
    trust_every: int = Field(20, ge=1, description="L-BFGS-B iterations between re-centrings of the trust box")


class Optimiser(Schema):
    u_update: Literal["exact", "joint"] = Field(
        "exact", description="exact: U minimised for the kernels at every step (a linear solve; Gauss-Newton for "
        "nonlinear problems); joint: U moved by the optimisers"
    )
    u_update_every: int = Field(1, ge=1, description="Adam steps between exact U updates")
    u_tol: float = Field(1e-8, gt=0, lt=1, description="CG tolerance of the exact U updates inside a phase")
    u_max_iter: int = Field(60, ge=1, description="CG iteration cap of the exact U updates inside a phase")
    u_newton_max_iter: int = Field(3, ge=1, description="Gauss-Newton steps of those updates (nonlinear problems)")
    # 1e-8 by default: on every shipped case it lowered the error or left it as it was (1D multi-scale
    # 4.0e-4 -> 5.8e-5, 2D Poisson, Allen-Cahn 2D, 3D: benchmarks/RESULTS.md, GP section).
    final_jitter: Optional[float] = Field(
        1e-8, gt=0, lt=1, description="after the phases U is solved once more for the final kernels (final_tol, "
        "final_max_iter), with the jitter lowered to this times the smallest kernel scale (sum of its weights; "
        "never above the fit's jitter); "
        "null: at the jitter of the fit")
    final_tol: float = Field(1e-10, gt=0, lt=1, description="CG tolerance of that final U solve")
    final_max_iter: int = Field(3000, ge=1, description="CG iteration cap of that solve")
    adam: Adam = Adam()
    lbfgs: LBFGS = LBFGS()


class Correction(Schema):
    """The paper's extra GP: after the main fit, a second GP with one broad kernel component per axis (at
    frequency 0) fits what the main mean leaves of the equation and the boundary data, and the answer is the
    sum of the two means (:meth:`sciml.solvers.gp.GPPDESolver.correction`). Its U is always solved for
    (the exact update, every ``optimiser.u_update_every`` steps), whatever ``optimiser.u_update`` says."""

    family: Literal["student_t", "gaussian"] = Field(
        "student_t", description="student_t: a Matern-5/2 kernel (the paper's); gaussian: a squared exponential")
    length_scale: float = Field(1.0, gt=0, description="initial length scale, in units of each axis' length")
    jitter: Optional[float] = Field(None, gt=0, lt=1, description="null: the smallest power of ten from 1e-14 "
                                    "up at which the kernels factor (a smooth kernel needs a small one)")
    # no Adam by default: an Adam step that makes a kernel lose its Cholesky factor at the small jitter ends
    # the run, where L-BFGS-B backs off (sin(500x) - 2(x - 0.5)^2: 100 Adam steps first, the same error)
    adam: Adam = Adam(steps=0)
    lbfgs: LBFGS = LBFGS()
    final_jitter: Optional[float] = Field(1e-8, gt=0, lt=1, description="as optimiser.final_jitter")
    when: Literal["always", "auto"] = Field(
        "always", description="always; or auto (the default when the case has no correction block): only where "
        "the main fit's estimated error is above 1e-3, and kept only where it lowers it")


class Test(Schema):
    points_per_period: float = Field(8.0, ge=8.0, description="of the highest learned frequency (the test "
                                     "grid is never coarser than twice the collocation grid)")
    min_points: int = Field(64, ge=2, description="per axis")


class Output(Schema):
    plots: bool = True
    paraview: bool = True
    progress_s: float = Field(60.0, ge=0, description="log a line on the running phase at most this often (s)")


class Config(Schema):
    kind: Literal["gp_pde"]
    seed: int = Field(0, ge=0, le=2**63 - 1)
    problem: Problem
    n_points: list[int] = Field(..., min_length=1, max_length=3, description="grid points per axis, boundary included")
    kernel: Kernel = Kernel()
    boundary_weight: float = Field(200.0, gt=0, description="λ_b")
    optimiser: Optimiser = Optimiser()
    correction: Optional[Correction] = Field(
        default_factory=lambda: Correction(when="auto"),
        description="the extra low-frequency GP (a block: always; by default when: auto); null: none")
    dense_limit: int = Field(1024, ge=0, description="dense exact U update up to this many grid points")
    test: Test = Test()
    output: Output = Output()

    @field_validator("n_points")
    @classmethod
    def _enough(cls, value: list[int]) -> list[int]:
        if min(value) < 3:
            raise ValueError(f"expected at least 3 points per axis (got {value})")
        if max(value) > _MAX_POINTS_AXIS or math.prod(value) > _MAX_POINTS:
            raise ValueError(f"expected at most {_MAX_POINTS_AXIS} points per axis and {_MAX_POINTS} in all (a "
                             f"dense {_MAX_POINTS_AXIS}² factor per axis is 3.2 GB) (got {value})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if len(self.n_points) != len(self.problem.domain):
            raise ValueError(
                f"n_points: has {len(self.n_points)} entries for a domain of {len(self.problem.domain)} intervals"
            )
        return self

    @model_validator(mode="after")
    def _finite_on_the_grids(self) -> "Config":
        """The solution and the source derived from it are finite at the collocation points and at the
        cells' centres (a singularity between grid points would make every error measure NaN)."""
        import torch

        try:
            problem = build_problem(self)
        except RecursionError:
            raise ValueError("problem.solution: too deeply nested to differentiate") from None
        axes = [torch.linspace(float(a), float(b), n, dtype=torch.float64)
                for (a, b), n in zip(self.problem.domain, self.n_points)]
        centres = [0.5 * (x[1:] + x[:-1]) for x in axes]
        for name, grid in (("the grid points", axes), ("the cells' centres", centres)):
            # in slabs of the first axis of about 2**20 points: memory stays bounded on every rank
            rest = math.prod(len(x) for x in grid[1:])
            step = max(1, 2**20 // rest)
            for start in range(0, len(grid[0]), step):
                coords = torch.meshgrid(grid[0][start: start + step], *grid[1:], indexing="ij")
                for what, evaluate in (("solution", problem.exact), ("source", problem.source)):
                    bad = ~torch.isfinite(evaluate(*coords))
                    if bool(bad.any()):
                        where = ", ".join(f"{c[bad][0].item():.6g}" for c in coords)
                        raise ValueError(f"problem.solution: the {what} is not finite at ({where}), one of {name}")
        return self


# --------------------------------------------------------------------------- building blocks
def build_problem(cfg: Config):
    """The :class:`~sciml.solvers.gp.PDEProblem` described by ``cfg.problem``."""
    from sciml.solvers.gp import Advection, AllenCahn, Poisson

    p = cfg.problem
    domain = [(float(a), float(b)) for a, b in p.domain]
    if p.equation == "advection":
        return Advection(p.solution, float(p.beta), domain)
    return {"poisson": Poisson, "allen_cahn": AllenCahn}[p.equation](p.solution, domain)


def kernel_type(family: str):
    """The kernel class of ``kernel.family``."""
    from sciml.solvers.gp import GaussianSpectralMixture, StudentTSpectralMixture

    return {"gaussian": GaussianSpectralMixture, "student_t": StudentTSpectralMixture}[family]


def build_solver(cfg: Config, max_lengthscale: float | None = None):
    """A fresh :class:`~sciml.solvers.gp.GPPDESolver` for ``cfg`` (seeded; float64, CPU), its length
    scales bounded by ``max_lengthscale`` or else by ``kernel.max_lengthscale``."""
    import torch

    from sciml.solvers.gp import GPPDESolver

    torch.manual_seed(cfg.seed)
    return GPPDESolver(
        build_problem(cfg),
        cfg.n_points,
        kernel_type=kernel_type(cfg.kernel.family),
        n_components=cfg.kernel.n_components,
        init=cfg.kernel.init,
        max_peaks=cfg.kernel.max_peaks,
        peak_share=cfg.kernel.peak_share,
        jitter=cfg.kernel.jitter,
        boundary_weight=cfg.boundary_weight,
        dense_limit=cfg.dense_limit,
        max_lengthscale=max_lengthscale if max_lengthscale is not None else cfg.kernel.max_lengthscale,
        dtype=torch.float64,
    )


def n_test_points(solver, cfg: Config) -> list[int]:
    """Test points per axis: ``points_per_period`` per period of the highest learned frequency, and at
    least twice the collocation points (a fit that lost the solution's frequency must not score itself on
    a grid too coarse to see it: ``sin(500x)`` learned as a constant would otherwise be tested on 64 points).

    The test points are the midpoints of ``n`` equal cells, with ``n`` the smallest multiple of the
    collocation intervals past that count: every collocation point is a cell edge, so every test point
    lies half a test spacing from the nearest one (staggered, never on a collocation point).
    """
    out = []
    for k, (a, b), n_col in zip(solver.kernels, solver.problem.domain, solver.n_points):
        w = k.weight.detach()
        mu = k.mu.detach().abs()[w >= _WEIGHT_SHARE * w.sum()]
        f_max = float(mu.max()) if mu.numel() else 0.0
        n = max(cfg.test.min_points, 2 * n_col, math.ceil(cfg.test.points_per_period * f_max * (b - a)))
        intervals = n_col - 1
        out.append(intervals * math.ceil(n / intervals))
    return out


def _phases(cfg: Config) -> list[str]:
    phases = ["adam"] if cfg.optimiser.adam.steps > 0 else []
    if cfg.optimiser.lbfgs.iterations > 0:
        phases += [f"lbfgs_{r + 1}" for r in range(cfg.optimiser.lbfgs.rounds)]
    return phases


def _run_phase(solver, cfg: Config, phase: str, first_lbfgs: bool, callback=None) -> list[float]:
    import torch

    opt = cfg.optimiser
    every = opt.u_update_every if opt.u_update == "exact" else None
    common = {"u_tol": opt.u_tol, "u_max_iter": opt.u_max_iter, "u_newton_max_iter": opt.u_newton_max_iter,
              "callback": callback}
    if phase == "adam":
        return solver.fit(n_adam=opt.adam.steps, lr=opt.adam.lr, u_update_every=every, **common)
    if not first_lbfgs:
        with torch.no_grad():
            solver.log_tau_residual += opt.lbfgs.precision_step
            solver.log_tau_boundary += opt.lbfgs.precision_step
    return solver.fit(n_adam=0, u_update_every=every, n_lbfgs=opt.lbfgs.iterations, lbfgs_rounds=1,
                      lbfgs_trust=lbfgs_trust(cfg), lbfgs_trust_every=opt.lbfgs.trust_every, **common)


def after_phases(solver, cfg: Config):
    """The U solve the case takes after its phases, not checkpointed (after a resume past the last
    phase it is simply run again): U for the final kernels to ``optimiser.final_tol``, at the jitter
    lowered to ``optimiser.final_jitter`` when that is set. Returns its
    :class:`~sciml.solvers.gp.solver.USolveInfo`.

    Inside a phase the U updates stop at ``u_tol`` / ``u_max_iter``, which is enough to steer the
    kernels but not for the answer: at the kernels of a 2D Allen–Cahn 200² run after its first
    L-BFGS-B phase, the U that phase ended with (1e-8, cap 60) was 2.9e-2 from the exact solution,
    U solved to 1e-10 3.4e-3 (``benchmarks/gp_preconditioner.py --run``, benchmarks/RESULTS.md)."""
    opt = cfg.optimiser
    return solver.final_solve(opt.final_jitter, cg_tol=opt.final_tol, cg_max_iter=opt.final_max_iter)


def _progress(run, phase: str, every_s: float):
    """A :meth:`GPPDESolver.fit` callback logging the phase's evaluation count and loss at most every
    ``every_s`` seconds (a phase can run for an hour; checkpoints come at phase ends only)."""
    last = time.perf_counter()

    def callback(solver, step: int, loss: float) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= every_s:
            last = now
            run.log(f"phase {phase}: evaluation {step + 1}, loss {loss:.6g}")

    return callback


def lbfgs_trust(cfg: Config) -> float | None:
    """The L-BFGS-B trust box of ``cfg``, ``auto`` resolved.

    Where the U update is an iterative (CG) solve, a quasi-Newton trial point that moves
    a sharp kernel component past its bandwidth makes the U problem nearly singular, CG
    stops at its cap, and L-BFGS-B sees an inexact loss and gradient; the box prevents
    those trials. The dense solve is exact at any trial point and the box only slows
    it down (benchmarks/RESULTS.md, GP section).
    """
    return _resolve_trust(cfg.optimiser.lbfgs.trust, cfg, exact=cfg.optimiser.u_update == "exact")


def _resolve_trust(trust, cfg: Config, exact: bool) -> float | None:
    if trust != "auto":
        return trust
    iterative = exact and math.prod(cfg.n_points) > cfg.dense_limit
    return AUTO_TRUST if iterative else None


def build_correction(solver, cfg: Config):
    """The extra GP of ``cfg.correction`` on the mean of the fitted ``solver``."""
    c = cfg.correction
    return type(solver).correction(solver, kernel_type=kernel_type(c.family), length_scale=c.length_scale,
                                   jitter=c.jitter, boundary_weight=cfg.boundary_weight)


def _fit_correction(corr, cfg: Config, callback=None) -> list[float]:
    c, opt = cfg.correction, cfg.optimiser
    # U always by the exact update here: a correction starts from U = 0 with precisions set by the main fit's
    # residual, and moved jointly by L-BFGS-B it went nowhere (sin500 with u_update: joint, 2.2e-1 -> 2.9e-1)
    return corr.fit(
        n_adam=c.adam.steps, lr=c.adam.lr, u_update_every=opt.u_update_every if opt.u_update == "exact" else 1,
        n_lbfgs=c.lbfgs.iterations, lbfgs_rounds=c.lbfgs.rounds, lbfgs_precision_step=c.lbfgs.precision_step,
        lbfgs_trust=_resolve_trust(c.lbfgs.trust, cfg, exact=True), lbfgs_trust_every=c.lbfgs.trust_every,
        u_tol=opt.u_tol, u_max_iter=opt.u_max_iter, u_newton_max_iter=opt.u_newton_max_iter, callback=callback,
    )


# --------------------------------------------------------------------------- the case
def run(cfg: Config, run) -> dict:
    """Run the case in ``run`` (a :class:`sciml.runs.Run`); returns the metrics."""
    import torch

    from sciml.solvers.gp.solver import relative_norm

    phases = _phases(cfg)
    always = cfg.correction is not None and cfg.correction.when == "always"
    n_phases = len(phases) + always
    done, iterations, elapsed = 0, 0, 0.0
    # attempt 1: the refit with bounded length scales; first: attempt 0's result until the two are compared;
    # retried: the comparison, and which fit was kept
    attempt, first, retried = 0, None, None
    ckpt = run.load_checkpoint() if run.resume else None
    if ckpt is not None:
        state = ckpt["state"]
        done, iterations, elapsed = int(state["phases_done"]), int(ckpt["step"]), float(state["elapsed_s"])
        attempt, first, retried = int(state.get("attempt", 0)), state.get("first"), state.get("retried")
    bounded = attempt == 1 and (retried is None or retried["kept"] == "bounded")
    solver = build_solver(cfg, _RETRY_LENGTHSCALE if bounded else None)
    if ckpt is not None:
        solver.load_state_dict(ckpt["state"]["solver"])
        n_phases += done > n_phases  # an automatic correction ran
        run.log(f"resumed after phase {done}/{n_phases}{' of the bounded refit' * (attempt and retried is None)} "
                f"({iterations} iterations, {elapsed:.1f} s)")
    run.log(f"{solver.problem!r}, grid {'x'.join(map(str, cfg.n_points))}, phases: "
            f"{', '.join(phases + ['correction'] * always) or 'none'}"
            + (", correction if needed" if cfg.correction is not None and not always else ""))

    t0 = time.perf_counter()

    def checkpoint(**state) -> None:
        run.save_checkpoint({"elapsed_s": elapsed + time.perf_counter() - t0, "attempt": attempt, "first": first,
                             "retried": retried, **state}, step=iterations)

    while True:
        for i in range(min(done, len(phases)), len(phases)):
            phase = phases[i]
            history = _run_phase(solver, cfg, phase, first_lbfgs=phase == "lbfgs_1",
                                 callback=_progress(run, phase, cfg.output.progress_s))
            iterations += len(history)
            n_test = n_test_points(solver, cfg)
            err = solver.relative_error(n_test)
            run.log(
                f"phase {phase}{' (bounded refit)' * attempt}: {len(history)} iterations, loss "
                f"{history[-1] if history else float('nan'):.6g}, relative L2 {err:.3e} on "
                f"{'x'.join(map(str, n_test))}, {elapsed + time.perf_counter() - t0:.1f} s"
            )
            checkpoint(solver=solver.state_dict(), phases_done=i + 1, phase=phase)
        main_state = {k: v.clone() for k, v in solver.state_dict().items()}  # before the final solve, as resumed
        info = after_phases(solver, cfg)
        run.log(f"final U solve at jitter {solver.jitter:.3g}: {_describe(info)}")
        n_test = n_test_points(solver, cfg)
        residual, estimate = solver.a_posteriori(n_test)
        # the refit and the correction follow the estimate, never the residual alone, which overstates the
        # error of a good transport fit (the shipped advection case: 1.1e-3 at an error of 7.7e-6)
        run.log(f"relative residual between the collocation points {residual:.3e}"
                + (f", estimated relative error {estimate:.3e}" if estimate is not None else ""))
        retry = retry_threshold(cfg)
        if attempt == 0 and cfg.kernel.max_lengthscale is None and retry is not None and estimate is not None \
                and estimate > retry and done <= len(phases):
            run.log(f"estimated error above kernel.retry_above = {retry:g}: fitting again with the length scales at "
                    f"most {_RETRY_LENGTHSCALE:g} axis length")
            first = {"solver": main_state, "residual": residual, "estimate": estimate}
            attempt, done = 1, 0
            solver = build_solver(cfg, _RETRY_LENGTHSCALE)
            continue
        break
    if attempt == 1 and retried is None:  # compare the two fits (once: a resume after it reads the outcome)
        keep_first = first["estimate"] <= estimate  # a refit runs only where there is an estimate
        retried = {"residual_free": first["residual"], "residual_bounded": residual,
                   "error_estimate_free": first["estimate"], "error_estimate_bounded": estimate,
                   "kept": "free" if keep_first else "bounded"}
        run.log(f"estimated error free {first['estimate']:.3e}, bounded {estimate:.3e}: keeping the "
                f"{retried['kept']} fit")
        if keep_first:
            solver = build_solver(cfg)
            solver.load_state_dict(first["solver"])
            main_state = first["solver"]
            info = after_phases(solver, cfg)
            residual, estimate = first["residual"], first["estimate"]
        first = None  # no longer needed by a resume
    final = {"final_jitter": solver.jitter, "final_cg_iterations": info.cg_iterations,
             "final_cg_relative_residual": info.cg_relative_residual, "final_preconditioner": info.preconditioner}
    if retried is not None:
        final["retry"] = retried

    result = solver
    n_test = n_test_points(solver, cfg)
    correct = cfg.correction is not None and (always or done > len(phases) or
                                              (estimate is not None and estimate > _RETRY_ABOVE))
    if correct:
        if not always and done <= len(phases):
            run.log(f"estimated error above {_RETRY_ABOVE:g}: adding the correction (correction.when: auto)")
        before = solver.relative_error(n_test)
        result = build_correction(solver, cfg)
        if done > len(phases):
            result.load_state_dict(ckpt["state"]["correction"])
        else:
            run.log(f"correction: relative L2 {before:.3e} before; a {cfg.correction.family} kernel per axis, "
                    f"jitter {result.jitter:.3g}")
            history = _fit_correction(result, cfg, callback=_progress(run, "correction", cfg.output.progress_s))
            iterations += len(history)
            spent = elapsed + time.perf_counter() - t0
            run.log(f"phase correction: {len(history)} iterations, loss {history[-1] if history else float('nan'):.6g},"
                    f" relative L2 {result.relative_error(n_test):.3e}, {spent:.1f} s")
            checkpoint(solver=main_state, correction=result.state_dict(), phases_done=len(phases) + 1,
                       phase="correction")
        fit_jitter = result.jitter
        info = result.final_solve(cfg.correction.final_jitter)
        run.log(f"correction: final U solve at jitter {result.jitter:.3g}: {_describe(info)}")
        final["correction"] = {
            "relative_l2_before": before, "jitter": fit_jitter, "final_jitter": result.jitter,
            "final_cg_iterations": info.cg_iterations, "final_cg_relative_residual": info.cg_relative_residual,
            "length_scale": [float(1.0 / k.rho[0].detach()) for k in result.kernels],
            "weight": [float(k.weight[0].detach()) for k in result.kernels],
        }
        new_residual, new_estimate = result.a_posteriori(n_test)
        keep = always or new_estimate < estimate  # auto (only where there is an estimate): where it lowers it
        if not always:
            final["correction"]["kept"] = bool(keep)
            run.log(f"correction: estimated error {estimate:.3e} without, {new_estimate:.3e} with: "
                    f"{'kept' if keep else 'dropped'}")
        if keep:
            residual, estimate = new_residual, new_estimate
        else:
            result = solver
    wall = elapsed + time.perf_counter() - t0

    axes = solver.test_axes(n_test)
    coords = torch.meshgrid(*axes, indexing="ij")
    exact = solver.problem.exact(*coords)
    mean = result.predict(*axes)
    err = relative_norm(mean - exact, exact)
    metrics: dict[str, Any] = {
        "relative_l2": err,
        "relative_residual_test": residual,
        "error_estimate": estimate,
        "dominant_frequencies": solver.dominant_frequencies(),
        "wall_time_s": wall,
        "iterations": iterations,
        "test_points": n_test,
        "max_abs_error": float((mean - exact).abs().max()),
        "n_points": list(cfg.n_points),
        **final,
    }
    run.log(f"final iterate: relative L2 {err:.3e}, relative residual {residual:.3e}"
            + (f", estimated error {estimate:.3e}" if estimate is not None else "")
            + f", dominant frequencies {metrics['dominant_frequencies']}")
    if run.comm.is_root:
        if cfg.output.paraview:
            _paraview(run, solver, axes, mean, exact)
        if cfg.output.plots:
            _plots(run, solver, axes, mean, exact)
    return metrics


def retry_threshold(cfg: Config) -> float | None:
    """``kernel.retry_above`` with ``auto`` resolved: None (no refit) where a correction always follows,
    else 1e-3.

    With a correction the refit is judged by the main fit alone while the answer is the corrected
    one: on ``cases/gp_poisson_1d_sin500.yaml`` the bounded refit's main fit had the smaller estimate
    (0.32 against 0.41) and the corrected answer came out 3.5e-7 against 1.8e-8 from the free fit."""
    value = cfg.kernel.retry_above
    if value == "auto":
        return None if cfg.correction is not None and cfg.correction.when == "always" else _RETRY_ABOVE
    return value


def _describe(info) -> str:
    """One log phrase for a :class:`~sciml.solvers.gp.solver.USolveInfo`."""
    if info.method != "kronecker":
        return "dense"
    return (f"{info.cg_iterations} CG iterations ({info.preconditioner}), "
            f"relative residual {info.cg_relative_residual:.2g}")


def _paraview(run, solver, axes, mean, exact) -> None:
    from sciml.meshes.paraview import ImageGrid, VTKFile

    spacing = [float(x[1] - x[0]) if x.numel() > 1 else 1.0 for x in axes]
    origin = [float(x[0]) for x in axes]
    fields = {"u": mean, "u_exact": exact, "error": mean - exact}
    fields = {k: v.cpu().numpy() for k, v in fields.items()}
    if len(axes) == 1:
        spacing, origin = spacing + [1.0], origin + [0.0]
        fields = {k: v[:, None] for k, v in fields.items()}
    grid = ImageGrid(fields["u"].shape, spacing=spacing, origin=origin)
    vtk = VTKFile(run.path / "fields.pvd", append=run.resume)
    if run.resume:
        vtk.truncate_after(-1.0)
    vtk.write(0.0, grid, **fields)


def _plots(run, solver, axes, mean, exact) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = solver.problem.variables
    m, e = mean.cpu().numpy(), exact.cpu().numpy()
    if m.ndim == 3:  # middle slice in the last axis
        k = m.shape[2] // 2
        m, e = m[:, :, k], e[:, :, k]
        names = names[:2]
    x = [a.cpu().numpy() for a in axes]
    for what, data in (("solution", (m, e)), ("error", (m - e,))):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        if m.ndim == 1:
            if what == "solution":
                ax.plot(x[0], data[1], lw=2.5, alpha=0.5, label="exact")
                ax.plot(x[0], data[0], lw=0.8, label="GP mean")
                ax.legend()
            else:
                ax.semilogy(x[0], np.abs(data[0]) + 1e-300)
                ax.set_ylabel("|u_h - u|")
            ax.set_xlabel(names[0])
        else:
            field = data[0] if what == "solution" else np.abs(data[0])
            im = ax.imshow(field.T, origin="lower", aspect="auto", cmap="RdBu_r" if what == "solution" else "magma",
                           extent=(x[0][0], x[0][-1], x[1][0], x[1][-1]))
            fig.colorbar(im, ax=ax, label="GP mean" if what == "solution" else "|u_h - u|")
            ax.set_xlabel(names[0])
            ax.set_ylabel(names[1])
        ax.set_title(f"{what}: {solver.problem!r}"[:90], fontsize=8)
        fig.tight_layout()
        fig.savefig(run.plots_dir / f"{what}.png")
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for d, k in enumerate(solver.kernels):
        w = k.weight.detach().cpu().numpy()
        mu = k.mu.detach().abs().cpu().numpy()
        ax.semilogy(mu, w / w.sum(), "o", ms=4, label=f"axis {solver.problem.variables[d]}")
    ax.set_xlabel("|μ_q| (cycles per unit length)")
    ax.set_ylabel("relative weight w_q")
    ax.set_title("learned spectral mixture")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run.plots_dir / "spectrum.png")
    plt.close(fig)
