"""GP-HM on 2D/3D Poisson (or 2D advection) with a manufactured solution: the error trajectory against CPU time.

Our scheme (Adam on the kernel hyper-parameters with the exact U update at every
step, then L-BFGS-B rounds on the profile loss, the precisions raised by e between
rounds) on a uniform grid of ``--n-points`` per axis over [0, 2 pi]^D, with the
default solver settings (30 Gaussian components per axis initialised over
[0, Nyquist] — a broadband start; ``--init spectrum`` puts the first ones at the
peaks of the data's spectra —, jitter 1e-6, lambda_b = 200, float64). Every
``--every`` evaluations it prints the loss, the CG iterations and CPU seconds of
that evaluation's U update, the relative L2 error of the current iterate on a
staggered grid of ``n + 7`` points per axis, the heaviest frequency per axis, and
the wall and CPU (``time.process_time``) seconds so far; the wall time is inflated
on a shared machine, the CPU time is not. The last line is the final iterate.

``--advection BETA`` poses :math:`u_t + \beta u_x = 0` on [0, 1]^2 (axes x, t) instead, with
the solution in x and t (default ``sin(x - BETA*t)``, the shipped ``cases/gp_advection.yaml``)
and ``--family student_t`` as there.

    OMP_NUM_THREADS=1 python benchmarks/gp_poisson_2d.py [--solution "sin(100*x)*sin(100*y)"]
        [--n-points 300] [--adam 60] [--lbfgs 150] [--rounds 2] [--u-max-iter 60] [--every 10]
        [--trust C] [--trust-every 20] [--init {uniform,spectrum}] [--components 30] [--jitter 1e-6]
        [--final-jitter R] [--final-max-iter 3000] [--advection BETA] [--family {gaussian,student_t}]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sciml.cases.gp_pde import kernel_type
from sciml.solvers.gp import Advection, GPPDESolver, Poisson


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solution", default=None,
                        help="in x, y (and z for 3D); with --advection in x, t (default sin(100*x)*sin(100*y), "
                             "or sin(x - BETA*t))")
    parser.add_argument("--advection", type=float, default=None, metavar="BETA",
                        help="advection u_t + BETA u_x = 0 on [0, 1]^2 instead of Poisson on [0, 2 pi]^D")
    parser.add_argument("--family", choices=("gaussian", "student_t"), default="gaussian")
    parser.add_argument("--n-points", type=int, default=300, help="per axis")
    parser.add_argument("--adam", type=int, default=60)
    parser.add_argument("--lbfgs", type=int, default=150, help="iteration cap per L-BFGS-B round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--u-tol", type=float, default=1e-8)
    parser.add_argument("--u-max-iter", type=int, default=60)
    parser.add_argument("--trust", type=float, default=None,
                        help="trust box of the L-BFGS-B phase, in spectral standard deviations (default: none)")
    parser.add_argument("--trust-every", type=int, default=20, help="L-BFGS-B iterations per trust box")
    parser.add_argument("--init", choices=("uniform", "spectrum"), default="uniform",
                        help="kernel start: uniform over [0, Nyquist] (the paper's) or at the data's spectral peaks")
    parser.add_argument("--components", type=int, default=30, help="per axis")
    parser.add_argument("--jitter", type=float, default=1e-6, help="added to each kernel factor")
    parser.add_argument("--final-jitter", type=float, default=None,
                        help="then solve U once more with the jitter lowered to this times the smallest kernel scale")
    parser.add_argument("--final-max-iter", type=int, default=3000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.advection is not None:
        dim = 2
        problem = Advection(args.solution or f"sin(x - {args.advection:g}*t)", args.advection, [(0.0, 1.0)] * 2)
    else:
        solution = args.solution or "sin(100*x)*sin(100*y)"
        dim = 3 if "z" in solution else 2
        problem = Poisson(solution, [(0.0, 2 * math.pi)] * dim)
    n = args.n_points
    start, cpu_start = time.perf_counter(), time.process_time()
    solver = GPPDESolver(problem, [n] * dim, kernel_type=kernel_type(args.family), init=args.init, n_components=args.components,
                         jitter=args.jitter)
    last_u = {"evals": 0}
    solve = solver._solve_u

    def counted_solve(ops, **kw):  # records the CG work of each U update
        cpu = time.process_time()
        info = solve(ops, **kw)
        last_u.update(iterations=info.cg_iterations, cpu=time.process_time() - cpu)
        return info

    solver._solve_u = counted_solve
    print(f"{problem!r}, {n}^{dim} points, init {args.init}, Adam {args.adam} + {args.rounds}x L-BFGS-B {args.lbfgs}, "
          f"U updates: tol {args.u_tol:g}, cap {args.u_max_iter}")
    print(f"{'eval':>5} {'loss':>14} {'CG it':>6} {'U CPU s':>8} {'rel. L2':>10} {'freq per axis':>24} "
          f"{'wall s':>8} {'CPU s':>8}")

    def report(step: int, loss: float) -> None:
        err = solver.relative_error(n + 7)
        freqs = " ".join(f"{f:.5f}" for f in solver.dominant_frequencies())
        print(f"{step:>5} {loss:>14.8g} {last_u.get('iterations', 0):>6} {last_u.get('cpu', 0.0):>8.2f} "
              f"{err:>10.3e} {freqs:>24} {time.perf_counter() - start:>8.1f} {time.process_time() - cpu_start:>8.1f}",
              flush=True)

    def callback(s, step, loss):
        if step % args.every == 0:
            report(step, loss)

    history = solver.fit(
        n_adam=args.adam, lr=1e-2, u_update_every=1, n_lbfgs=args.lbfgs, lbfgs_rounds=args.rounds,
        u_tol=args.u_tol, u_max_iter=args.u_max_iter, lbfgs_trust=args.trust, lbfgs_trust_every=args.trust_every,
        callback=callback,
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    err = solver.relative_error(n + 7)
    print(f"final iterate after {len(history)} evaluations: relative L2 {err:.3e}, "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU")
    if args.final_jitter is not None:
        info = solver.final_solve(args.final_jitter, cg_max_iter=args.final_max_iter)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        print(f"final U solve at jitter {solver.jitter:.3g} ({info.cg_iterations} CG iterations, relative residual "
              f"{info.cg_relative_residual:.2g}): relative L2 {solver.relative_error(n + 7):.3e}, "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"log tau_r {solver.log_tau_residual.item():.3f}, log tau_b {solver.log_tau_boundary.item():.3f}; "
          "heaviest components per axis (mu, rho, weight):")
    with torch.no_grad():
        for d, k in enumerate(solver.kernels):
            order = torch.argsort(k.weight, descending=True)[:6].tolist()
            print(f"  axis {d}: " + ", ".join(f"({float(k.mu[q]):.5f}, {float(k.rho[q]):.3g}, {float(k.weight[q]):.2e})"
                                              for q in order))


if __name__ == "__main__":
    main()
