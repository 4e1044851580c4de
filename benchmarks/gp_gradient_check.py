"""GP-HM: the profile loss's hyper-parameter gradient against central finite differences.

Advection ``u_t + beta u_x = 0``, ``u = sin(x - beta t)`` on [0, 1]², Student-t kernels, after a few
Adam steps with exact U updates. Prints the rms of the equation residual at the exact U update
beside those of its two terms, and per kernel parameter (x kernel, then t kernel) three gradients:
``profile`` (:meth:`GPPDESolver.profile_loss`, refined multipliers), ``tau*r`` (the envelope
gradient with the computed residual) and ``fd`` (central differences of min_U J, step 1e-5).

    python benchmarks/gp_gradient_check.py [--beta 200] [--n-points 70] [--adam 30] [--components 10]
"""

from __future__ import annotations

import argparse

import torch

from sciml.solvers.gp import Advection, GPPDESolver, StudentTSpectralMixture
from sciml.solvers.gp.kronecker import apply_along


def profile_value(s: GPPDESolver) -> float:
    s.solve_u(cg_tol=1e-13, cg_max_iter=5000)
    return float(s.loss().detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beta", type=float, default=200.0)
    parser.add_argument("--n-points", type=int, default=70)
    parser.add_argument("--adam", type=int, default=30)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--step", type=float, default=1e-5)
    args = parser.parse_args()

    problem = Advection(f"sin(x - {args.beta}*t)", args.beta, [(0.0, 1.0), (0.0, 1.0)])
    s = GPPDESolver(problem, [args.n_points] * 2, kernel_type=StudentTSpectralMixture,
                    n_components=args.components, dense_limit=0)
    s.fit(n_adam=args.adam, lr=1e-2, u_update_every=1)
    params = [(f"{axis}.{name}", p) for axis, k in zip("xt", s.kernels) for name, p in k.named_parameters()]
    profile = torch.autograd.grad(s.profile_loss(cg_tol=1e-13, cg_max_iter=5000), [p for _, p in params])
    plain = torch.autograd.grad(s.loss(), [p for _, p in params])
    u, ops = s.u.detach(), s._operators()
    terms = [apply_along(d, g.detach(), ops.chol.solve_along(d, u))[s.interior] for d, g in enumerate(ops.deriv_grams)]
    rms = [float(t.square().mean().sqrt()) for t in [s.residual().detach(), *terms]]
    print(f"advection beta = {args.beta:g}, {args.n_points}², {args.adam} Adam steps, at the exact U update: "
          f"rms of the residual {rms[0]:.3g}, of its terms beta u_x {rms[1]:.3g} and u_t {rms[2]:.3g}")
    print(f"{'parameter':>16} {'profile':>13} {'tau*r':>13} {'fd':>13} {'|profile-fd|/|fd|':>18} "
          f"{'|tau*r-fd|/|fd|':>16}")
    for (name, p), gp, gr in zip(params, profile, plain):
        for i in range(1, min(p.numel(), 3)):  # entry 0 is the frequency-0 component (mu fixed at 0)
            values = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    p.view(-1)[i] += sign * args.step
                values.append(profile_value(s))
                with torch.no_grad():
                    p.view(-1)[i] -= sign * args.step
            fd = (values[0] - values[1]) / (2 * args.step)
            a, b = float(gp.reshape(-1)[i]), float(gr.reshape(-1)[i])
            print(f"{name + f'[{i}]':>16} {a:+13.6e} {b:+13.6e} {fd:+13.6e} {abs(a - fd) / abs(fd):18.2e} "
                  f"{abs(b - fd) / abs(fd):16.2e}")


if __name__ == "__main__":
    main()
