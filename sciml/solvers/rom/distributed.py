r"""Element partitions, ordered reductions, and the partitioned high-fidelity model.

The rule that makes results independent of the number of MPI ranks (DESIGN.md,
"The same result on any number of MPI ranks"):

* cells are cut into consecutive **blocks** of ``block_size`` cells; the cut depends
  on the mesh and ``block_size`` only. Blocks are dealt to ranks in contiguous
  ranges; a rank *owns* the cells, and the integration points, of its blocks;
* every floating-point operation that mixes several points or cells is done on one
  block at a time, with arrays of the block's fixed shape, so that a block's
  partial result is bitwise the same whichever rank computes it;
* partial results are added in increasing block index (:meth:`Partition.sum`,
  :meth:`Partition.sparse_sum`), never in rank order; greedy choices over points
  take the largest score, ties going to the smallest global point index
  (:meth:`Partition.argmax`).

Data layout: displacement-like vectors ``(n_dof,)`` are replicated on every rank
(the linear solve of the high-fidelity Newton is redundant SuperLU or a row-distributed
CG, see :class:`PartitionedHFModel`);
integration-point fields are *local*, ``(n_local, ...)`` over the owned points in
increasing global index; reduced quantities are replicated.

:class:`DofSpace` and :class:`PointSpace` are the two :class:`~sciml.solvers.rom.pod.Space`
implementations the ROM uses: the FE mass inner product on dof vectors and the
quadrature-weighted :math:`L^2` product on point fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from sciml.parallel import Comm, SerialComm

from .fem import ROUND_OFF, Discretisation, HFModel, HFState, StepResult
from .krylov import BlockJacobi, CGSolver, DirectSolver, DistributedMatrix, RowBlocks, alltoall, forcing_term, pcg
from .material import MaterialState
from .pod import Space

__all__ = ["Partition", "DofSpace", "PointSpace", "PartitionedHFModel", "Linearisation"]


@final
class Partition:
    """Cells of ``disc`` cut into fixed-size blocks, blocks dealt to the ranks of ``comm``.

    Parameters
    ----------
    disc : Discretisation
    comm : Comm, optional
        Default: serial.
    block_size : int
        Cells per block (the last block may be shorter). Results depend on it, never
        on the number of ranks.

    Attributes
    ----------
    n_blocks : int
    owned_blocks : list of int
        Global indices of this rank's blocks (a contiguous range, possibly empty).
    cells : ndarray, shape ``(n_cells_local,)``
        Owned cells, increasing.
    points : ndarray, shape ``(n_local,)``
        Owned integration points (global indices, increasing); local point ``i`` is
        global point ``points[i]``.
    block_slices : dict of int to slice
        Local point range of each owned block.

    Examples
    --------
    >>> from sciml.meshes import box_mesh_2d
    >>> part = Partition(Discretisation(*box_mesh_2d(4, 2, 2.0, 1.0), "quad"), block_size=3)
    >>> part.n_blocks, part.owned_blocks, part.n_local
    (3, [0, 1, 2], 32)
    """

    def __init__(self, disc: Discretisation, comm: Comm | None = None, block_size: int = 128) -> None:
        if int(block_size) != block_size or block_size < 1:
            raise ValueError(f"Partition: expected a positive integer block_size, got {block_size!r}")
        self.disc, self.comm, self.block_size = disc, comm or SerialComm(), int(block_size)
        n = disc.n_cells
        self.n_blocks = -(-n // self.block_size)
        lo = self.comm.rank * self.n_blocks // self.comm.size
        hi = (self.comm.rank + 1) * self.n_blocks // self.comm.size
        self.owned_blocks = list(range(lo, hi))
        self.cells = np.arange(lo * self.block_size, min(hi * self.block_size, n), dtype=np.int64)
        self.points = disc.qp_indices(self.cells)
        self.n_local = self.points.size
        nq = disc.n_qp_cell
        self.block_slices = {
            b: slice((b - lo) * self.block_size * nq, min((b - lo + 1) * self.block_size, self.cells.size) * nq)
            for b in self.owned_blocks
        }

    # -- blocks -------------------------------------------------------------------------------------
    def block_cells(self, b: int) -> np.ndarray:
        """Global cell indices of block ``b``."""
        return np.arange(b * self.block_size, min((b + 1) * self.block_size, self.disc.n_cells), dtype=np.int64)

    def block_of_local(self) -> np.ndarray:
        """Global block index of each local point, shape ``(n_local,)``."""
        return self.points // (self.block_size * self.disc.n_qp_cell)

    def blockwise(self, fn: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
        """``fn`` applied to each owned block's rows of the local ``arrays``, concatenated.

        Use it for any BLAS call over points (e.g. ``A @ C``): the call then sees the
        block's fixed shape and gives the same bits on any number of ranks.
        """
        parts = [fn(*(a[s] for a in arrays)) for s in self.block_slices.values()]
        if parts:
            return np.concatenate(parts, axis=0)
        probe = fn(*(a[:0] for a in arrays))
        return probe

    def sum(self, fn: Callable[[int, slice], np.ndarray]) -> np.ndarray:
        r""":math:`\sum_b` ``fn(b, local_slice)`` over all blocks, added in block order, on every rank."""
        return self.comm.ordered_sum({b: fn(b, s) for b, s in self.block_slices.items()}, self.n_blocks)

    def sparse_sum(self, parts: dict[int, tuple[np.ndarray, np.ndarray]], size: int) -> np.ndarray:
        """Dense ``(size,)`` sum of per-block sparse partials ``{b: (unique indices, values)}``,
        added in block order on every rank (the same bits as a dense ordered sum)."""
        total = np.zeros(size)
        gathered: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for part in self.comm.allgather(parts):
            gathered.update(part)
        for b in sorted(gathered):
            idx, val = gathered[b]
            total[idx] += val
        return total

    # -- points -------------------------------------------------------------------------------------
    def owned_mask(self, global_points: np.ndarray) -> np.ndarray:
        """Which of ``global_points`` this rank owns."""
        g = np.asarray(global_points, dtype=np.int64)
        return (g >= self.points[0]) & (g <= self.points[-1]) if self.n_local else np.zeros(g.shape, bool)

    def local_index(self, global_points: np.ndarray) -> np.ndarray:
        """Local indices of owned global points (all of ``global_points`` must be owned)."""
        g = np.asarray(global_points, dtype=np.int64)
        return g - (self.points[0] if self.n_local else 0)

    def gather_points(self, local: np.ndarray) -> np.ndarray:
        """The global point field ``(n_qp, ...)`` from each rank's ``(n_local, ...)``, on every rank."""
        return np.concatenate(self.comm.allgather(np.asarray(local)), axis=0)

    def gather_selected(self, local: np.ndarray, global_points: np.ndarray) -> np.ndarray:
        """Rows of the distributed point field ``local`` at ``global_points`` (any order), on every rank."""
        g = np.asarray(global_points, dtype=np.int64)
        mine = self.owned_mask(g)
        rows = {int(i): r for i, r in zip(np.flatnonzero(mine), np.asarray(local)[self.local_index(g[mine])])}
        merged: dict[int, np.ndarray] = {}
        for part in self.comm.allgather(rows):
            merged.update(part)
        shape = np.asarray(local).shape[1:]
        return np.array([merged[i] for i in range(g.size)]).reshape((g.size,) + shape)

    def top(self, scores: np.ndarray, k: int, payload: Callable[[int], np.ndarray]
            ) -> list[tuple[int, float, np.ndarray]]:
        """The ``k`` global points of largest score (ties: smallest global index), best first, as
        ``(global index, score, payload(local index))`` with the payload computed by the owner,
        on every rank. ``scores`` is ``(n_local,)``; ``-inf`` excludes a point."""
        mine = []
        if self.n_local and k > 0:
            order = np.lexsort((self.points, -scores))[:k]  # by score, then by global index
            mine = [(float(scores[i]), int(self.points[i]), payload(int(i))) for i in order if np.isfinite(scores[i])]
        merged = [c for part in self.comm.allgather(mine) for c in part]
        merged.sort(key=lambda c: (-c[0], c[1]))
        return [(point, score, data) for score, point, data in merged[:k]]

    def argmax(self, scores: np.ndarray, payload: Callable[[int], np.ndarray]) -> tuple[int, float, np.ndarray]:
        """:meth:`top` with ``k = 1``; ``(-1, -inf, None)`` when every score is ``-inf``."""
        best = self.top(scores, 1, payload)
        return best[0] if best else (-1, -np.inf, None)


@final
class DofSpace(Space):
    r"""Replicated dof vectors ``(n_dof, k)`` with the FE mass inner product :math:`a^\top M b`.

    ``M`` is never formed globally: each block assembles its cells' mass matrix once
    and :meth:`gram` adds the block partials :math:`A_b^\top M_b B_b` in block order.
    """

    def __init__(self, partition: Partition) -> None:
        self.partition = partition
        disc = partition.disc
        self._blocks: dict[int, tuple[np.ndarray, sp.csr_matrix]] = {}
        w = disc.qp_weights.reshape(disc.n_cells, disc.n_qp_cell)
        ms = np.einsum("cg,ga,gb->cab", w, disc.shape_values, disc.shape_values)
        nd = disc.cell_dofs.shape[1]
        for b in partition.owned_blocks:
            cells = partition.block_cells(b)
            cd = disc.cell_dofs[cells]
            dofs, local = np.unique(cd, return_inverse=True)
            local = local.reshape(cd.shape)
            me = np.einsum("cab,ij->caibj", ms[cells], np.eye(disc.dim)).reshape(cells.size, nd, nd)
            rows = np.repeat(local, nd, axis=1).ravel()
            cols = np.tile(local, (1, nd)).ravel()
            M = sp.csr_matrix((me.ravel(), (rows, cols)), shape=(dofs.size, dofs.size))
            self._blocks[b] = (dofs, M)

    def gram(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)

        def part(b: int, _: slice) -> np.ndarray:
            dofs, M = self._blocks[b]
            return A[dofs].T @ (M @ B[dofs])

        return self.partition.sum(part)

    def lincomb(self, A: np.ndarray, C: np.ndarray) -> np.ndarray:
        return np.asarray(A) @ np.asarray(C)  # replicated: the same call, the same bits on every rank


@final
class PointSpace(Space):
    r"""Local integration-point fields ``(n_local, k)`` with :math:`a^\top \operatorname{diag}(w) b`.

    Parameters
    ----------
    partition : Partition
    weights : ndarray, shape ``(n_local,)``, optional
        Default: the quadrature weights of the owned points (an :math:`L^2` product).
    """

    def __init__(self, partition: Partition, weights: np.ndarray | None = None) -> None:
        self.partition = partition
        self.weights = partition.disc.qp_weights[partition.points] if weights is None else np.asarray(weights)

    def gram(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
        return self.partition.sum(lambda b, s: A[s].T @ (self.weights[s, None] * B[s]))

    def lincomb(self, A: np.ndarray, C: np.ndarray) -> np.ndarray:
        C = np.asarray(C, dtype=np.float64)
        return self.partition.blockwise(lambda a: a @ C, np.asarray(A, dtype=np.float64))


@final
class Linearisation:
    r"""The tangent :math:`K` of one state, ready to solve with: ``solve`` gives
    :math:`K_{ff}^{-1} b` for replicated ``b (n_free,)`` or ``(n_free, k)`` (replicated result),
    ``coupling`` gives :math:`K_{fd} v` for values ``v (n_fixed,)`` on the Dirichlet dofs.
    Built by :meth:`PartitionedHFModel.linearise`; ``iterations`` counts the CG iterations
    of the solves so far (0 for the direct solver)."""

    def __init__(self, hf: "PartitionedHFModel", C_alg: np.ndarray) -> None:
        self.hf, self.C_alg, self.iterations = hf, C_alg, 0
        free, fixed = hf.free_dofs, hf.fixed_dofs
        if isinstance(hf.linear_solver, DirectSolver):
            K = hf.tangent(C_alg)
            Kf = K[free]
            self._K_fd = Kf[:, fixed]
            self._lu = splu(Kf[:, free].tocsc(), permc_spec="MMD_AT_PLUS_A")
        else:
            self.A = hf.tangent_rows(C_alg)
            rows = self.A.rows
            amg = hf.linear_solver.amg
            self._M = BlockJacobi(self.A, amg, hf.rigid_modes()[rows.lo:rows.hi] if amg else None, hf.node_size)

    def coupling(self, values: np.ndarray) -> np.ndarray:
        r""":math:`K_{fd} v`, ``(n_free,)`` replicated, or ``(n_free, k)`` for ``values (n_fixed, k)`` (CG: the
        internal forces of the stress :math:`\mathbb C\,\varepsilon(\tilde u)`, :math:`\tilde u` = ``values``
        on the fixed dofs, 0 elsewhere)."""
        hf = self.hf
        if isinstance(hf.linear_solver, DirectSolver):
            return self._K_fd @ values
        if np.ndim(values) == 2:
            return np.column_stack([self.coupling(v) for v in np.asarray(values).T])
        u = np.zeros(hf.disc.n_dof)
        u[hf.fixed_dofs] = values
        return hf.internal_forces(np.einsum("qij,qj->qi", self.C_alg, hf.strain(u)))[hf.free_dofs]

    def solve(self, rhs: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
        """:math:`K_{ff}^{-1}` ``rhs`` (CG: each column to relative residual ``rtol``)."""
        if isinstance(self.hf.linear_solver, DirectSolver):
            return self._lu.solve(rhs)
        rows, cg = self.A.rows, self.hf.linear_solver
        cols = rhs[:, None] if rhs.ndim == 1 else rhs
        out = np.empty(cols.shape)
        for j in range(cols.shape[1]):
            res = pcg(self.A, cols[rows.lo:rows.hi, j], self._M, rtol, cg.max_iter)
            self.iterations += res.iterations
            out[:, j] = rows.gather(res.x)
        return out[:, 0] if rhs.ndim == 1 else out


@final
class PartitionedHFModel:
    """The high-fidelity model of :class:`~sciml.solvers.rom.fem.HFModel` with partitioned assembly.

    Each rank updates the material at its own points and assembles its blocks'
    partial internal forces and tangent; the partials are added in block order, so the
    result is bitwise the same on any number of ranks. Displacements are replicated,
    material states and stresses local. The Newton correction is solved by

    * :class:`~sciml.solvers.rom.krylov.DirectSolver` (default): every rank holds the whole
      :math:`K_{ff}` (:meth:`tangent`, :meth:`Partition.sparse_sum`) and factorises it (SuperLU);
    * :class:`~sciml.solvers.rom.krylov.CGSolver`: rank ``r`` assembles only its rows of
      :math:`K_{ff}` (:meth:`tangent_rows`: element blocks send each owner the entries of its
      rows, the owner adds them in block order) and block-Jacobi CG solves with a relative
      tolerance that follows the Newton residual
      (:func:`~sciml.solvers.rom.krylov.forcing_term`: inexact Newton, still quadratic).

    States are :class:`~sciml.solvers.rom.fem.HFState` whose ``material`` and
    ``sigma`` hold the *owned* points only.
    """

    def __init__(self, model: HFModel, partition: Partition,
                 linear_solver: DirectSolver | CGSolver | None = None) -> None:
        if model.disc is not partition.disc:
            raise ValueError("PartitionedHFModel: the model and the partition must share one Discretisation")
        linear_solver = DirectSolver() if linear_solver is None else linear_solver
        if not isinstance(linear_solver, (DirectSolver, CGSolver)):
            raise TypeError(f"PartitionedHFModel: expected a DirectSolver or a CGSolver, got {linear_solver!r}")
        self.model, self.partition, self.disc = model, partition, model.disc
        self.linear_solver = linear_solver
        self.material = model.material
        self.free_dofs, self.fixed_dofs, self.fixed_values = model.free_dofs, model.fixed_dofs, model.fixed_values
        self.external = model.external  # replicated: the same serial computation on every rank
        self.n_factors, self.load_vector = model.n_factors, model.load_vector
        self._block_dofs = {b: np.unique(self.disc.cell_dofs[partition.block_cells(b)])
                            for b in partition.owned_blocks}
        self._coords = self.disc.qp_coords[partition.points]
        self._rows: dict | None = None
        self._layouts: dict | None = None
        self._rigid: np.ndarray | None = None
        dim, free = self.disc.dim, self.free_dofs
        nodes = free // dim
        whole = free.size % dim == 0 and bool(np.all(nodes.reshape(-1, dim) == nodes[::dim, None]))
        #: dofs per node in the free numbering (``dim`` when every node is wholly free or fixed, else 1);
        #: CG row blocks are rounded up to a multiple of it, so that no block cuts a node
        self.node_size = dim if whole else 1

    def rigid_modes(self) -> np.ndarray:
        """Rigid-body motions restricted to the free dofs, ``(n_free, 3)`` in 2D, ``(n_free, 6)`` in 3D
        (translations, then rotations about the coordinate axes through the origin)."""
        if self._rigid is not None:
            return self._rigid
        dim, X = self.disc.dim, self.disc.points
        n = X.shape[0]
        modes = []
        for c in range(dim):
            t = np.zeros((n, dim))
            t[:, c] = 1.0
            modes.append(t)
        for i, j in ((0, 1),) if dim == 2 else ((0, 1), (1, 2), (2, 0)):
            r = np.zeros((n, dim))
            r[:, i], r[:, j] = -X[:, j], X[:, i]
            modes.append(r)
        self._rigid = np.column_stack([m.reshape(-1) for m in modes])[self.free_dofs]
        return self._rigid

    def temperature_at(self, t: float) -> np.ndarray:
        """Temperature at the owned points, ``(n_local,)``."""
        return np.asarray(self.model.temperature(self._coords, t), dtype=np.float64).reshape(-1)

    def initial_state(self, t0: float = 0.0) -> HFState:
        T = self.temperature_at(t0)
        sigma = -np.einsum("qij,qj->qi", self.material.elastic_tangent(T), self.material.thermal_strain(T))
        return HFState(t0, np.zeros(self.disc.n_dof), MaterialState.zeros(self.partition.n_local), sigma)

    def strain(self, u: np.ndarray) -> np.ndarray:
        """Strain at the owned points, ``(n_local, 6)``."""
        return self.disc.strain(u, self.partition.cells)

    def _elastic_scale(self, C_alg: np.ndarray, u: np.ndarray) -> float:
        r""":math:`\|f^\mathrm{int}(C : \varepsilon(u))\|`: the force scale of the current strain. Where the
        stress and every residual of a step are round-off (a body expanding freely, a step that starts in
        equilibrium) the relative test cannot be met; a residual at round-off of this scale
        (:data:`~sciml.solvers.rom.fem.ROUND_OFF`) is converged (collective)."""
        return float(np.linalg.norm(self.internal_forces(np.einsum("qij,qj->qi", C_alg, self.strain(u)))))

    def internal_forces(self, sigma: np.ndarray) -> np.ndarray:
        r""":math:`f^\mathrm{int}` ``(n_dof,)`` from local stresses, summed in block order."""
        parts = {}
        for b, s in self.partition.block_slices.items():
            f = self.disc.internal_forces(sigma[s], elements=self.partition.block_cells(b))
            dofs = self._block_dofs[b]
            parts[b] = (dofs, f[dofs])
        return self.partition.sparse_sum(parts, self.disc.n_dof)

    def _block_entries(self, C_alg: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        if self._layouts is None:  # the pattern slots of each block, kept: the pattern never changes
            self._layouts = {b: self.disc.entry_layout(self.partition.block_cells(b))
                             for b in self.partition.owned_blocks}
        return {b: self.disc.tangent_entries(C_alg[s], self.partition.block_cells(b), self._layouts[b])
                for b, s in self.partition.block_slices.items()}

    def tangent(self, C_alg: np.ndarray) -> sp.csr_matrix:
        """Global tangent from local consistent tangents ``(n_local, 6, 6)``, summed in block order,
        replicated on every rank."""
        indptr, indices = self.disc.pattern
        data = self.partition.sparse_sum(self._block_entries(C_alg), indices.size)
        return sp.csr_matrix((data, indices, indptr), shape=(self.disc.n_dof, self.disc.n_dof))

    def _row_layout(self) -> dict:
        """Rows of :math:`K_{ff}` per rank (:class:`RowBlocks` of ``row_block`` free dofs), the range of
        pattern slots each rank's rows span, and the map from those slots to the local CSR."""
        if self._rows is None:
            free = self.free_dofs
            k = self.node_size
            rows = RowBlocks(free.size, -(-self.linear_solver.row_block // k) * k, self.partition.comm)
            indptr, indices = self.disc.pattern
            ranges = [(int(indptr[free[lo]]), int(indptr[free[hi - 1] + 1])) if hi > lo else (0, 0)
                      for lo, hi in rows.ranges]
            s0, s1 = ranges[self.partition.comm.rank]
            index = np.full(self.disc.n_dof, -1, dtype=np.int64)
            index[free] = np.arange(free.size)
            g0 = int(free[rows.lo]) if rows.n_local else 0
            g1 = int(free[rows.hi - 1]) + 1 if rows.n_local else 0
            row = np.repeat(np.arange(g0, g1), np.diff(indptr[g0:g1 + 1]))
            col = indices[s0:s1]
            keep = (index[row] >= 0) & (index[col] >= 0)
            local_indptr = np.concatenate([[0], np.cumsum(np.bincount(index[row[keep]] - rows.lo,
                                                                      minlength=rows.n_local))])
            self._rows = {"rows": rows, "ranges": ranges, "keep": keep, "indices": index[col[keep]],
                          "indptr": local_indptr, "size": s1 - s0}
        return self._rows

    def tangent_rows(self, C_alg: np.ndarray) -> DistributedMatrix:
        """This rank's rows of :math:`K_{ff}` (free dofs renumbered ``0..n_free-1``), bitwise the rows of
        :meth:`tangent`: each element block sends every rank the entries in its rows, owners add
        them in block order."""
        lay = self._row_layout()
        comm = self.partition.comm
        sends: list[dict] = [{} for _ in range(comm.size)]
        for b, (slots, vals) in self._block_entries(C_alg).items():
            for r, (s0, s1) in enumerate(lay["ranges"]):
                i0, i1 = np.searchsorted(slots, [s0, s1])
                if i1 > i0:
                    sends[r][b] = (slots[i0:i1] - s0, vals[i0:i1])
        merged: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for part in alltoall(comm, sends):
            merged.update(part)
        data = np.zeros(lay["size"])
        for b in sorted(merged):
            idx, val = merged[b]
            data[idx] += val
        rows = lay["rows"]
        local = sp.csr_matrix((data[lay["keep"]], lay["indices"], lay["indptr"]), shape=(rows.n_local, rows.n))
        return DistributedMatrix(rows, local)

    def linearise(self, C_alg: np.ndarray) -> Linearisation:
        """The tangent of local consistent tangents ``C_alg (n_local, 6, 6)``, assembled and
        factorised (direct) or distributed with its preconditioner (CG)."""
        return Linearisation(self, C_alg)

    def solve_step(self, state: HFState, t: float, load_factor: float | np.ndarray) -> StepResult:
        """Newton from ``state`` to time ``t`` (the algorithm of :meth:`HFModel.solve_step`); with
        :class:`CGSolver` each correction is solved to the relative residual
        :func:`~sciml.solvers.rom.krylov.forcing_term` of the current Newton residual."""
        dt = t - state.t
        if not dt > 0.0:
            raise ValueError(f"solve_step: expected t > state.t = {state.t}, got {t}")
        T = self.temperature_at(t)
        u = state.u.copy()
        free, fixed = self.free_dofs, self.fixed_dofs
        lam = self.load_vector(load_factor)
        du_fixed = self.fixed_values @ lam - u[fixed]
        f_ext = self.external[free] @ lam
        residuals: list[float] = []
        iterations: list[int] = []
        rtol, max_iter = self.model.rtol, self.model.max_iter
        for it in range(max_iter + 1):
            sigma, mat, C_alg = self.material.update(self.strain(u), state.material, T, dt)
            f = self.internal_forces(sigma)
            r = f[free] - f_ext
            residuals.append(float(np.linalg.norm(r)))
            target = rtol * max(float(np.linalg.norm(f)), max(residuals))
            if it > 0 or not du_fixed.any():
                if residuals[-1] <= target or residuals[-1] <= ROUND_OFF * self._elastic_scale(C_alg, u):
                    return StepResult(HFState(t, u, mat, sigma), residuals, iterations)
            if it == max_iter:
                break
            op = self.linearise(C_alg)
            if it == 0 and du_fixed.any():
                r = r + op.coupling(du_fixed)
                u[fixed] += du_fixed
            eta = 0.0
            if isinstance(self.linear_solver, CGSolver):
                norm = float(np.linalg.norm(r))
                eta = forcing_term(self.linear_solver.rtol, norm, max(max(residuals), norm), target)
            u[free] -= op.solve(r, eta)
            if isinstance(self.linear_solver, CGSolver):
                iterations.append(op.iterations)
        raise RuntimeError(f"PartitionedHFModel.solve_step: Newton did not converge in {max_iter} iterations "
                           f"at t = {t}; residual norms {residuals}")
