"""CG iterations of the GP-HM U update with each of its preconditioners.

The exact U update past ``dense_limit`` is a preconditioned CG on the whitened normal equations.
The fast diagonalisation (:class:`sciml.solvers.gp.solver._FastDiagonalisationPreconditioner`),
plain, approximates the collocation block and leaves the coupling to the Dirichlet values to CG;
lifted, it moves the interior with the boundary values. This script solves U to a relative
residual ``--tol`` with each variant, by default from U = 0 for two kernel states of Poisson with a
manufactured solution on [0, 2 pi]^D:

* ``start``: the kernels of ``init="spectrum"`` (peaks of the data's spectra plus a broadband rest);
* ``sharp``: what a fit leaves (one component per axis, at the first peak, weight ``--weight`` and
  rho ``--rho``; the others at weight 1e-30).

``--run DIR`` takes the problem, grid, kernels and U a ``gp_pde`` run ended its last phase with
(its ``config.yaml`` and last checkpoint) instead: one state, ``run``, each solve starting from the
run's U (a nonlinear problem's U update is Gauss–Newton; the iterations are summed over its steps);
the first line, ``as run``, is the error of that U itself.

Variants (``--variants``): the fast diagonalisation ``plain`` and ``lifted``, the diagonal
``jacobi``, and ``auto`` (the solver's default: a short probe of the fast diagonalisation and the
diagonal, the better one goes on). Prints the iterations, the final relative residual, the CPU
seconds of the solve and the relative L2 error of U against the exact solution, per (state,
variant). ``--spectrum`` (grids up to 4096 points) adds the extreme eigenvalues of the
preconditioned normal matrix of the linear part (dense) and the share of them outside [0.5, 2].

    OMP_NUM_THREADS=1 python benchmarks/gp_preconditioner.py [--solution "sin(20*x)*sin(20*y)*sin(20*z)"]
        [--n-points 64] [--tol 1e-8] [--max-iter 1500] [--weight 0.03] [--rho 0.005] [--run DIR] [--spectrum]
        [--variants plain lifted jacobi auto]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from sciml.cases import gp_pde
from sciml.config import load_case
from sciml.runs import Run
from sciml.solvers.gp import GPPDESolver, Poisson


#: variant -> (solve_u's preconditioner, GPPDESolver.lift_boundary)
VARIANTS = {"plain": ("fast_diagonalisation", False), "lifted": ("fast_diagonalisation", True),
            "jacobi": ("jacobi", None), "auto": ("auto", None)}


def sharpen(solver: GPPDESolver, weight: float, rho: float) -> None:
    """Keep the first component of every axis (a spectral peak) at ``weight`` and ``rho``, the rest at 1e-30."""
    with torch.no_grad():
        for k in solver.kernels:
            log_w = torch.full_like(k.log_weight, math.log(1e-30))
            log_w[0] = math.log(weight)
            k.log_weight.copy_(log_w)
            k.log_rho.fill_(math.log(rho))


def from_run(folder: Path) -> GPPDESolver:
    """The solver of the ``gp_pde`` run in ``folder`` as its last checkpoint left it."""
    cfg = load_case(folder / "config.yaml").config
    checkpoint = Run(folder, resume=True).load_checkpoint()
    if checkpoint is None:
        raise SystemExit(f"{folder}: no checkpoint")
    solver = gp_pde.build_solver(cfg)
    solver.load_state_dict(checkpoint["state"]["solver"])
    return solver


@torch.no_grad()
def preconditioned_spectrum(solver: GPPDESolver, preconditioner: str) -> tuple[float, float, float]:
    """Smallest and largest eigenvalue of P^1/2 N P^1/2 (N the whitened normal matrix of the linear
    part, P the preconditioner, both formed densely) and the share of eigenvalues outside [0.5, 2]."""
    ops = solver._operators()
    system, pc = solver._kronecker_system(ops, solver._weights_sqrt(), preconditioner)
    n = solver.u.numel()
    unit = torch.eye(n, dtype=solver.u.dtype).reshape(n, *solver.n_points)
    normal = torch.stack([system.normal_matvec(e) for e in unit]).reshape(n, n)
    p = torch.stack([pc(e) for e in unit]).reshape(n, n)
    root = torch.linalg.cholesky(0.5 * (p + p.T))
    ev = torch.linalg.eigvalsh(root.T @ normal @ root)
    return float(ev.min()), float(ev.max()), float(((ev < 0.5) | (ev > 2.0)).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solution", default="sin(20*x)*sin(20*y)*sin(20*z)", help="in x, y (and z for 3D)")
    parser.add_argument("--n-points", type=int, default=64, help="per axis")
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--max-iter", type=int, default=1500)
    parser.add_argument("--weight", type=float, default=0.03)
    parser.add_argument("--rho", type=float, default=0.005)
    parser.add_argument("--run", type=Path, default=None, help="a gp_pde run folder: its problem, grid and kernels")
    parser.add_argument("--spectrum", action="store_true", help="also the preconditioned spectrum (dense)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.run is not None:
        solver, states = from_run(args.run), ("run",)
    else:
        dim = 3 if "z" in args.solution else 2
        solver = GPPDESolver(Poisson(args.solution, [(0.0, 2 * math.pi)] * dim), [args.n_points] * dim,
                             init="spectrum")
        states = ("start", "sharp")
    if args.spectrum and solver.u.numel() > 4096:
        raise SystemExit(f"--spectrum: {solver.u.numel()} grid points, at most 4096")
    grid = "x".join(map(str, solver.n_points))
    start = "the run's U" if args.run is not None else "U = 0"
    print(f"{solver.problem!r}, {grid} points, CG from {start} to {args.tol:g} (cap {args.max_iter})")
    print(f"{'kernels':>8} {'preconditioner':>15} {'CG it':>6} {'rel. residual':>14} {'CPU s':>7} {'rel. L2':>10}"
          + (f" {'min eig':>9} {'max eig':>9} {'outside':>8}" if args.spectrum else ""))
    n_test = [n + 7 for n in solver.n_points]
    u_start = solver.u.detach().clone() if args.run is not None else torch.zeros_like(solver.u)
    if args.run is not None:
        print(f"{'run':>8} {'as run':>15} {'':>6} {'':>14} {'':>7} {solver.relative_error(n_test):>10.3e}")
    for state in states:
        if state == "sharp":
            sharpen(solver, args.weight, args.rho)
        for variant in args.variants:
            preconditioner, solver.lift_boundary = VARIANTS[variant]
            with torch.no_grad():
                solver.u.copy_(u_start)
            cpu = time.process_time()
            info = solver.solve_u(cg_tol=args.tol, cg_max_iter=args.max_iter, preconditioner=preconditioner)
            cpu = time.process_time() - cpu
            name = f"auto: {'FD' if info.preconditioner.startswith('fast') else info.preconditioner}" \
                if variant == "auto" else variant
            line = (f"{state:>8} {name:>15} {info.cg_iterations:>6} "
                    f"{info.cg_relative_residual:>14.2e} {cpu:>7.2f} {solver.relative_error(n_test):>10.3e}")
            if args.spectrum and variant != "auto":
                low, high, outside = preconditioned_spectrum(solver, preconditioner)
                line += f" {low:>9.2e} {high:>9.2e} {outside:>8.1%}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
