"""CG iterations of the GP-HM U update with the plain and the lifted fast-diagonalisation preconditioner.

The exact U update of a linear problem past ``dense_limit`` is a preconditioned CG on the
whitened normal equations (:class:`sciml.solvers.gp.solver._FastDiagonalisationPreconditioner`).
Its plain variant approximates the collocation block and leaves the coupling to the Dirichlet
values to CG; the lifted variant moves the interior with the boundary values. This script solves
U from U = 0 to a relative residual ``--tol`` with each, for two kernel states of Poisson with a
manufactured solution on [0, 2 pi]^D:

* ``start``: the kernels of ``init="spectrum"`` (peaks of the data's spectra plus a broadband rest);
* ``sharp``: what a fit leaves (one component per axis, at the first peak, weight ``--weight`` and
  rho ``--rho``; the others at weight 1e-30).

Prints the iterations, the final relative residual, the CPU seconds of the solve and the relative
L2 error of U against the exact solution, per (state, variant).

    OMP_NUM_THREADS=1 python benchmarks/gp_preconditioner.py [--solution "sin(20*x)*sin(20*y)*sin(20*z)"]
        [--n-points 64] [--tol 1e-8] [--max-iter 1500] [--weight 0.03] [--rho 0.005]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sciml.solvers.gp import GPPDESolver, Poisson


def sharpen(solver: GPPDESolver, weight: float, rho: float) -> None:
    """Keep the first component of every axis (a spectral peak) at ``weight`` and ``rho``, the rest at 1e-30."""
    with torch.no_grad():
        for k in solver.kernels:
            log_w = torch.full_like(k.log_weight, math.log(1e-30))
            log_w[0] = math.log(weight)
            k.log_weight.copy_(log_w)
            k.log_rho.fill_(math.log(rho))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solution", default="sin(20*x)*sin(20*y)*sin(20*z)", help="in x, y (and z for 3D)")
    parser.add_argument("--n-points", type=int, default=64, help="per axis")
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--max-iter", type=int, default=1500)
    parser.add_argument("--weight", type=float, default=0.03)
    parser.add_argument("--rho", type=float, default=0.005)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dim = 3 if "z" in args.solution else 2
    n = args.n_points
    solver = GPPDESolver(Poisson(args.solution, [(0.0, 2 * math.pi)] * dim), [n] * dim, init="spectrum")
    print(f"Poisson u = {args.solution}, {n}^{dim} points, CG from U = 0 to {args.tol:g} (cap {args.max_iter})")
    print(f"{'kernels':>8} {'preconditioner':>15} {'CG it':>6} {'rel. residual':>14} {'CPU s':>7} {'rel. L2':>10}")
    for state in ("start", "sharp"):
        if state == "sharp":
            sharpen(solver, args.weight, args.rho)
        for lift in (False, True):
            solver.lift_boundary = lift
            with torch.no_grad():
                solver.u.zero_()
            cpu = time.process_time()
            info = solver.solve_u(cg_tol=args.tol, cg_max_iter=args.max_iter)
            cpu = time.process_time() - cpu
            print(f"{state:>8} {'lifted' if lift else 'plain':>15} {info.cg_iterations:>6} "
                  f"{info.cg_relative_residual:>14.2e} {cpu:>7.2f} {solver.relative_error(n + 7):>10.3e}", flush=True)


if __name__ == "__main__":
    main()
