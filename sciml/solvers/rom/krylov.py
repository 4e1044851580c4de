r"""Linear solvers of the high-fidelity Newton step: redundant SuperLU, or block-Jacobi CG on
a row-distributed operator.

The tangent :math:`K_{ff} = \sum_q w_q B_q^\top \mathbb C_q B_q` (free dofs) of the
thermo-viscoplastic model is symmetric positive definite: the consistent tangent of the
radial return (:mod:`~sciml.solvers.rom.material`) is symmetric (associated flow) with
eigenvalues :math:`3\kappa` (volumetric), :math:`2G(1 - 3G\Delta p/q^\mathrm{tr}) > 0`
(deviatoric, orthogonal to the flow direction :math:`N`; :math:`\Delta p < q^\mathrm{tr}/(3G+H)`
because the overstress stays positive) and :math:`2G(1 - 3G\beta) \ge 2GH/(3G+H) > 0`
(along :math:`N`, since :math:`\beta \le 1/(3G+H)`); with the Dirichlet conditions removing
the rigid motions, :math:`K_{ff}` is SPD and preconditioned conjugate gradients apply.

Distribution (:class:`RowBlocks`): the ``n`` free dofs are cut into consecutive blocks of
``row_block`` rows, a cut that depends on ``n`` and ``row_block`` only; blocks are dealt to
the ranks in contiguous ranges. A rank holds the rows of its blocks as a local CSR
``(n_local, n)`` (:class:`DistributedMatrix`); the preconditioner is block-Jacobi over the
*same fixed blocks* (:class:`BlockJacobi`: one SuperLU factorisation of each diagonal
block, or one V-cycle of pyamg smoothed aggregation on it with the rigid-body modes as
near null space), not over the ranks' row ranges, so that it does not change with the number of
ranks. Dot products are sums of per-block partials added in block order
(:meth:`Comm.ordered_sum`); a matrix-vector product gathers the whole vector and lets each
rank multiply its rows (a CSR row sum does not depend on which other rows sit beside it).
Hence every CG iterate is bitwise the same on any number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, final

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from sciml.parallel import Comm, SerialComm

__all__ = ["DirectSolver", "CGSolver", "RowBlocks", "DistributedMatrix", "BlockJacobi", "CGResult", "pcg",
           "forcing_term", "alltoall"]


@dataclass(frozen=True)
class DirectSolver:
    """SuperLU factorisation of the whole :math:`K_{ff}`, redundantly on every rank (the default:
    the fastest choice for small 2D meshes)."""


@dataclass(frozen=True)
class CGSolver:
    r"""Block-Jacobi preconditioned CG on the row-distributed :math:`K_{ff}`.

    Attributes
    ----------
    rtol : float
        Largest relative residual :math:`\eta_\max` asked of one linear solve; inside Newton
        the tolerance follows the Newton residual (:func:`forcing_term`).
    row_block : int
        Rows per block of the distribution and of the block-Jacobi preconditioner
        (results depend on it, never on the number of ranks).
    max_iter : int
        CG iteration limit; exceeding it raises ``RuntimeError``.
    amg : bool
        Each diagonal block approximately inverted by one V-cycle of pyamg smoothed
        aggregation instead of factorised by SuperLU (far cheaper for large 3D blocks, whose
        factors fill in).
    """

    rtol: float = 1e-2
    row_block: int = 4096
    max_iter: int = 5000
    amg: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.rtol < 1.0:
            raise ValueError(f"CGSolver: expected 0 < rtol < 1, got {self.rtol}")
        if int(self.row_block) != self.row_block or self.row_block < 1:
            raise ValueError(f"CGSolver: expected a positive integer row_block, got {self.row_block!r}")
        if int(self.max_iter) != self.max_iter or self.max_iter < 1:
            raise ValueError(f"CGSolver: expected a positive integer max_iter, got {self.max_iter!r}")


def forcing_term(eta_max: float, residual: float, first_residual: float, target: float) -> float:
    r"""Relative tolerance of the linear solve at a Newton iterate (inexact Newton).

    :math:`\eta = \min(\eta_\max, \|R_k\| / \|R_0\|)`, so that the linear error,
    :math:`\eta\|R_k\| \le \|R_k\|^2/\|R_0\|`, is of the order of the quadratic Newton term
    and the convergence stays quadratic; never below :math:`0.1\,\tau/\|R_k\|` with
    ``target`` :math:`\tau` the absolute residual at which Newton stops (no solve finer than
    the answer needs).
    """
    if residual <= 0.0:
        return eta_max
    eta = min(eta_max, residual / first_residual) if first_residual > 0.0 else eta_max
    return min(eta_max, max(eta, 0.1 * target / residual))


def alltoall(comm: Comm, items: list[Any]) -> list[Any]:
    """``items[r]`` goes to rank ``r``; returns what every rank sent to this one, by source rank."""
    if comm.size == 1:
        return list(items)
    mpi = getattr(comm, "comm", None)
    if mpi is not None and hasattr(mpi, "alltoall"):
        return mpi.alltoall(items)
    everything = comm.allgather(items)  # any other communicator: correct, more traffic
    return [everything[r][comm.rank] for r in range(comm.size)]


@final
class RowBlocks:
    """``n`` rows cut into blocks of ``block_size``, blocks dealt to the ranks of ``comm`` in
    contiguous ranges.

    Attributes
    ----------
    n_blocks : int
    owned_blocks : list of int
    lo, hi : int
        This rank's rows ``lo:hi``.
    ranges : list of tuple of int
        Every rank's ``(lo, hi)``.
    block_slices : dict of int to slice
        Local row range of each owned block.

    Examples
    --------
    >>> rows = RowBlocks(10, 4)
    >>> rows.n_blocks, rows.lo, rows.hi, rows.dots((np.ones(10), np.arange(10.0))).tolist()
    (3, 0, 10, [45.0])
    """

    def __init__(self, n: int, block_size: int, comm: Comm | None = None) -> None:
        self.n, self.block_size, self.comm = int(n), int(block_size), comm or SerialComm()
        self.n_blocks = max(1, -(-self.n // self.block_size))
        size = self.comm.size

        def span(rank: int) -> tuple[int, int]:
            b0, b1 = rank * self.n_blocks // size, (rank + 1) * self.n_blocks // size
            return min(b0 * self.block_size, self.n), min(b1 * self.block_size, self.n)

        self.ranges = [span(r) for r in range(size)]
        self.lo, self.hi = self.ranges[self.comm.rank]
        b0 = self.comm.rank * self.n_blocks // size
        b1 = (self.comm.rank + 1) * self.n_blocks // size
        self.owned_blocks = list(range(b0, b1))
        self.block_slices = {b: slice(b * self.block_size - self.lo, min((b + 1) * self.block_size, self.n) - self.lo)
                             for b in self.owned_blocks}

    @property
    def n_local(self) -> int:
        return self.hi - self.lo

    def dots(self, *pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        r""":math:`a^\top b` for each pair of local ``(n_local,)`` vectors, ``(len(pairs),)`` on every rank:
        per-block partials (one ``np.dot`` on the block's fixed length) added in block order."""
        parts = {b: np.array([np.dot(a[s], c[s]) for a, c in pairs]) for b, s in self.block_slices.items()}
        return self.comm.ordered_sum(parts, self.n_blocks)

    def gather(self, x_local: np.ndarray) -> np.ndarray:
        """The whole ``(n,)`` vector from every rank's rows, on every rank."""
        if self.comm.size == 1:
            return np.asarray(x_local)
        return np.concatenate(self.comm.allgather(np.asarray(x_local)))


@final
class DistributedMatrix:
    """This rank's rows ``lo:hi`` of a square ``(n, n)`` matrix, as CSR ``(n_local, n)``."""

    def __init__(self, rows: RowBlocks, local: sp.csr_matrix) -> None:
        if local.shape != (rows.n_local, rows.n):
            raise ValueError(f"DistributedMatrix: expected local rows of shape {(rows.n_local, rows.n)}, "
                             f"got {local.shape}")
        self.rows, self.local = rows, local

    def matvec(self, x_local: np.ndarray) -> np.ndarray:
        """Local rows of :math:`A x` from the local rows of ``x`` (one allgather)."""
        return self.local @ self.rows.gather(x_local)


@contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """numpy's global generator seeded with ``seed`` inside, the caller's state restored after."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


@final
class BlockJacobi:
    """Block-Jacobi preconditioner over the fixed row blocks of ``A``.

    Parameters
    ----------
    A : DistributedMatrix
    amg : bool
        False: SuperLU of each owned diagonal block (exact block solves). True: one V-cycle
        of pyamg smoothed aggregation (symmetric strength, theta 0.1) per block, with the
        local rows of ``near_null`` ``(n_local, k)`` (rigid-body modes) as candidates and
        ``node_size`` x ``node_size`` BSR blocks (the dofs of a node; 1 for scalar). pyamg
        draws the start vectors of its spectral-radius estimates from numpy's global
        generator: each block's hierarchy is built with it seeded by the block index (the
        caller's state restored), so that it does not depend on the blocks a rank built before.
    """

    def __init__(self, A: DistributedMatrix, amg: bool = False, near_null: np.ndarray | None = None,
                 node_size: int = 1) -> None:
        rows = A.rows
        self.rows = rows
        self._solve = {}
        for b, s in rows.block_slices.items():
            cols = slice(s.start + rows.lo, s.stop + rows.lo)
            D = A.local[s, cols]
            if not amg:
                self._solve[b] = splu(D.tocsc(), permc_spec="MMD_AT_PLUS_A").solve
                continue
            import pyamg

            size = node_size if D.shape[0] % node_size == 0 else 1
            B = None if near_null is None else np.ascontiguousarray(near_null[s])
            with _global_numpy_seed(b):
                ml = pyamg.smoothed_aggregation_solver(D.tobsr(blocksize=(size, size)) if size > 1 else D.tocsr(),
                                                       B=B, symmetry="symmetric", strength=("symmetric", {"theta": 0.1}))
            self._solve[b] = ml.aspreconditioner(cycle="V").matvec

    def apply(self, r_local: np.ndarray) -> np.ndarray:
        z = np.empty_like(r_local)
        for b, s in self.rows.block_slices.items():
            z[s] = self._solve[b](r_local[s])
        return z


@dataclass(frozen=True)
class CGResult:
    """``x``: local rows of the solution; ``iterations``; ``residual``: final :math:`\\|b - Ax\\|/\\|b\\|`."""

    x: np.ndarray
    iterations: int
    residual: float


def pcg(A: DistributedMatrix, b_local: np.ndarray, M: BlockJacobi, rtol: float, max_iter: int) -> CGResult:
    r"""Preconditioned conjugate gradients for SPD :math:`A x = b` from :math:`x_0 = 0`, until
    :math:`\|b - A x\|_2 \le` ``rtol`` :math:`\|b\|_2` (the recurrence residual).

    Two ordered reductions per iteration (:math:`p^\top A p`; :math:`r^\top z` with
    :math:`r^\top r`) and one allgather (the product): bitwise the same on any number of ranks.
    """
    rows = A.rows
    b_local = np.asarray(b_local, dtype=np.float64)
    x = np.zeros_like(b_local)
    r = b_local.copy()
    z = M.apply(r)
    rz, rr = rows.dots((r, z), (r, r))
    bnorm = float(np.sqrt(rr))
    if bnorm == 0.0:
        return CGResult(x, 0, 0.0)
    p = z.copy()
    for it in range(1, max_iter + 1):
        Ap = A.matvec(p)
        pAp = float(rows.dots((p, Ap))[0])
        alpha = rz / pAp
        x += alpha * p
        r -= alpha * Ap
        z = M.apply(r)
        rz_new, rr = rows.dots((r, z), (r, r))
        if np.sqrt(rr) <= rtol * bnorm:
            return CGResult(x, it, float(np.sqrt(rr)) / bnorm)
        p = z + (rz_new / rz) * p
        rz = rz_new
    raise RuntimeError(f"pcg: no convergence to rtol {rtol:g} in {max_iter} iterations "
                       f"(relative residual {float(np.sqrt(rr)) / bnorm:.3e}); raise max_iter or row_block")
