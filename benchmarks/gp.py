"""GP-HM on the shipped ``cases/gp_*.yaml`` problems against classical solvers and the paper.

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
A dense exact GP in gpytorch is not a peer here: gpytorch has no likelihood that
observes derivatives of the latent function through :math:`K'' K^{-1}`, so it cannot
pose the collocation problem; the dense exact solve of *this* GP is our own dense
QR path (every 1D case uses it).

    python benchmarks/gp.py [--cases gp_poisson_1d_sin100 ...] [--adam N] [--lbfgs N]
                            [--rounds N] [--solution EXPR] [--threads 1]

``--solution`` replaces the manufactured solution of every case run (e.g.
``sin(80*x)*sin(120*y)`` with ``--cases gp_poisson_2d_sin100``), to check that a
configuration is not tuned to its one solution. Times: wall and CPU
(``time.process_time``) seconds of our solver; on a shared machine the wall time is
inflated by the load, the CPU time is not.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from sciml.cases import gp_pde
from sciml.config import load_case
from sciml.runs import Run

CASES = Path(__file__).resolve().parents[1] / "cases"
PAPER = {  # DESIGN.md, "Kronecker GP PDE solver"
    "gp_poisson_1d_sin100": "4e-7 (GM, 1e5 steps)",
    "gp_poisson_1d_sin500": "4e-4 (1e6 steps + low-freq GP)",
    "gp_poisson_2d_sin100": "4.7e-6 (GM, 1e5 steps)",
    "gp_allen_cahn_1d_sin100": "7.7e-7",
    "gp_allen_cahn_2d": "2.6e-3 (3e6 steps)",
    "gp_advection": "1.4e-4 (ST) / 1.3e-3 (GM), 1e6 steps",
}
DEFAULT = ["gp_poisson_1d_sin100", "gp_poisson_1d_sin6cos100", "gp_poisson_1d_sin500", "gp_allen_cahn_1d_sin100"]


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


def ours(name: str, args) -> dict:
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
    cfg = cfg.model_copy(update=update)
    with tempfile.TemporaryDirectory() as folder:
        run = Run(folder)
        cpu = time.process_time()
        metrics = gp_pde.run(cfg, run)
        metrics["cpu_time_s"] = time.process_time() - cpu
        run.close()
    metrics["budget"] = f"Adam {adam.steps} + {lbfgs.rounds}x L-BFGS-B {lbfgs.iterations}"
    metrics["problem"] = gp_pde.build_problem(cfg)
    metrics["n"] = list(cfg.n_points)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=DEFAULT)
    parser.add_argument("--adam", type=int, default=None)
    parser.add_argument("--lbfgs", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--solution", default=None, help="replace each case's exact solution")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.cases:
        m = ours(name, args)
        if type(m["problem"]).__name__ in ("Poisson", "AllenCahn"):
            fd, t_fd = fd2_solve(m)
            ch, t_ch = cheb_solve(m)
            ref = (f"{fd:.1e} / {t_fd:.2f} s", f"{ch:.1e} / {t_ch:.2f} s", f"{m['relative_l2'] / fd:.2g}")
        else:
            ref = ("n/a (advection)", "n/a", "—")
        label = name if args.solution is None else f"{name}, u = {args.solution}"
        rows.append(
            (label, "x".join(map(str, m["n"])), m["budget"], f"{m['relative_l2']:.2e}",
             f"{m['wall_time_s']:.1f} / {m['cpu_time_s']:.1f}", str(m["iterations"]), *ref,
             PAPER.get(name, "—") if args.solution is None else "—")
        )
    head = ("case", "grid", "ours: budget", "ours: rel. L2", "ours: wall / CPU s", "evals", "FD2: err / time",
            "Chebyshev: err / time", "ours / FD2", "paper")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\n{args.threads} torch thread(s); errors: relative L2, ours on a staggered test grid, FD2 and "
          "Chebyshev on their own nodes.")


if __name__ == "__main__":
    main()
