r"""Empirical cubature (ECM) by non-negative orthogonal matching pursuit, and its warm-started update.

Problem
-------
Given integrands :math:`g_r(x)` (rows ``r``) sampled at the integration points,
:math:`G_{rq} = g_r(x_q)`, and the full quadrature :math:`b = G w`, find a few points
:math:`\mathcal S` and weights :math:`\hat w \ge 0` with

.. math::

    \| G_{:,\mathcal S} \hat w - b \|_2 \le \mathrm{tol}\, \|b\|_2 .

For the reduced model the rows are :math:`r = (s, k)`, snapshot ``s`` and POD mode
``k``, and :math:`g_{sk}(x_q) = \sigma_s(x_q) : \varepsilon(\psi_k)(x_q)`, the integrand of
the reduced internal force (Hernández, Caicedo, Ferrer, "Dimensional hyper-reduction
of nonlinear finite element models via empirical cubature", CMAME 313, 2017;
Casenave & Akkari, 2019). :class:`StressIntegrand` never forms :math:`G`: it evaluates
:math:`G^\top r` block by block from the stress snapshots and :math:`B_q\Psi`.

Algorithm
---------
Non-negative OMP (Bruckstein, Elad, Zibulevsky, IEEE TIT 54, 2008), which is
Lawson-Hanson's active-set NNLS with its outer loop driven greedily and stopped at
the tolerance:

1. pick the ``batch`` points of largest *normalised* correlation
   :math:`G_q^\top r / \|G_q\|` with the residual :math:`r = b - G_{:,\mathcal S}\hat w`
   over all points of all ranks (ties: smallest global index) — :meth:`Partition.top`;
2. each enters the support in turn: the least-squares problem on the support is
   solved through a Cholesky factorisation of its Gram matrix, appended to when a point
   enters and updated by Givens rotations when one leaves; if some weight is
   not positive, step back to the feasible boundary and drop the point whose weight
   reached zero (Lawson-Hanson's inner loop). A dropped point is not offered again
   until the greedy loop stalls without it (near-degenerate columns would otherwise
   cycle in and out);
3. stop when :math:`\|r\| \le \mathrm{tol}\|b\|`, or when no point has a positive
   correlation (the NNLS optimum over all points), or after three passes without
   progress.

Only the chosen columns travel between ranks; the small least-squares problems are
solved redundantly on every rank with identical data, so the result does not depend
on the number of ranks.

Update
------
:func:`ecm` with ``initial=`` (the previous result) is the incremental update of the
adaptive ROM: the previous points keep their weights as the feasible starting point
(the least-squares problem is not re-solved on them alone), the greedy loop adds the
points the new rows need, and the inner loop drops the old points that the new
solution no longer wants. Nothing is recomputed from scratch but the right-hand side
and the column norms (one pass over the points). :class:`StressCubature` goes further
for the adaptive ROM: its rows never rotate, so an update forms only the rows of the new
snapshots and of the new basis directions, and the NNLS keeps its columns and Gram
matrix, grown by those rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import final

import numpy as np
import scipy.linalg as sla

from .distributed import Partition

__all__ = ["Integrand", "StressIntegrand", "DenseIntegrand", "ECMResult", "ecm", "StressCubature"]


class Integrand(ABC):
    """The implicit matrix :math:`G` ``(n_rows, n_qp)`` with columns at the points of a :class:`Partition`."""

    partition: Partition
    #: Full quadrature weights of the owned points, ``(n_local,)``.
    weights: np.ndarray

    @property
    @abstractmethod
    def n_rows(self) -> int:
        """Number of integrands."""

    @abstractmethod
    def integrals(self) -> np.ndarray:
        """:math:`b = G w` (full quadrature), ``(n_rows,)``, on every rank (block-ordered sum)."""

    @abstractmethod
    def correlations(self, r: np.ndarray) -> np.ndarray:
        r""":math:`G_q^\top r` at the owned points, ``(n_local,)``."""

    @abstractmethod
    def column(self, i: int) -> np.ndarray:
        """:math:`G_q` of local point ``i``, ``(n_rows,)``."""

    @abstractmethod
    def column_norms(self) -> np.ndarray:
        r""":math:`\|G_q\|_2` at the owned points, ``(n_local,)``."""

    def columns(self, points: np.ndarray) -> np.ndarray:
        """Columns of the global ``points``, ``(n_rows, len(points))``, on every rank."""
        points = np.asarray(points, dtype=np.int64)
        part = self.partition
        mine = np.flatnonzero(part.owned_mask(points))
        local = {int(j): self.column(int(part.local_index(points[j]))) for j in mine}
        merged: dict[int, np.ndarray] = {}
        for chunk in part.comm.allgather(local):
            merged.update(chunk)
        if points.size == 0:
            return np.zeros((self.n_rows, 0))
        return np.stack([merged[j] for j in range(points.size)], axis=1)


@final
class StressIntegrand(Integrand):
    r"""Rows :math:`g_{sk}(x_q) = d_{sk}\, \sigma_s(x_q) \cdot (B_q \psi_k)` (Mandel, snapshot-major),
    and one constant row :math:`g_0 = c`.

    At equilibrium under imposed displacements the reduced internal forces vanish,
    :math:`\int \sigma_s : \varepsilon(\psi_k) = 0`, so the force rows alone would be
    integrated exactly by the empty quadrature. The constant row (the volume, as in
    Hernández et al. 2017) makes the problem non-degenerate: the points and weights
    must reproduce the volume *and* annihilate the force integrands, to
    :math:`\mathrm{tol}\,\|b\| \approx \mathrm{tol}\; c\,|\Omega|` in the Euclidean norm
    over all rows. By default :math:`d_{sk} = 1` and
    :math:`c = (\sum_{sk} \|g_{sk}\|_{L^2}^2 / |\Omega|)^{1/2}`: the constant row's
    :math:`L^2` norm equals that of all force rows together, so the tolerance bounds the force
    rows' error as a whole, not row by row.

    Parameters
    ----------
    sigma : ndarray, shape ``(n_local, 6, m)``
        Stress snapshots at the owned points.
    BPsi : ndarray, shape ``(n_local, 6, n)``
        :math:`B_q \Psi` at the owned points.
    partition : Partition
    weights : ndarray, shape ``(n_local,)``, optional
        Full quadrature weights (default: the discretisation's).
    row_scale : ndarray, shape ``(m, n)``, optional
        :math:`d_{sk}` (default 1).

    Cost of :meth:`correlations`: :math:`6 m n` flops per point, no ``(m n, n_qp)`` array.
    """

    def __init__(self, sigma: np.ndarray, BPsi: np.ndarray, partition: Partition,
                 weights: np.ndarray | None = None, row_scale: np.ndarray | None = None) -> None:
        n_local = partition.n_local
        if sigma.ndim != 3 or sigma.shape[:2] != (n_local, 6) or BPsi.ndim != 3 or BPsi.shape[:2] != (n_local, 6):
            raise ValueError(f"StressIntegrand: expected sigma (n_local, 6, m) and BPsi (n_local, 6, n) with "
                             f"n_local = {n_local}, got {sigma.shape} and {BPsi.shape}")
        self.sigma, self.BPsi, self.partition = sigma, BPsi, partition
        self.m, self.n = sigma.shape[2], BPsi.shape[2]
        self.weights = partition.disc.qp_weights[partition.points] if weights is None else np.asarray(weights)
        self.row_scale = np.ones((self.m, self.n)) if row_scale is None else np.asarray(row_scale, dtype=np.float64)
        if self.row_scale.shape != (self.m, self.n):
            raise ValueError(f"StressIntegrand: expected row_scale of shape ({self.m}, {self.n}), "
                             f"got {self.row_scale.shape}")

        # one pass over the points: per-point column norms, integrals and the rows' L2 norms
        norms2 = []

        def moments(b: int, s: slice) -> np.ndarray:
            g = self._products(self.sigma[s], self.BPsi[s])
            norms2.append((g * g).sum(axis=(1, 2)))
            w = self.weights[s]
            return np.concatenate([np.einsum("q,qsk->sk", w, g).ravel(), np.einsum("q,qsk->sk", w, g * g).ravel(),
                                   [w.sum()]])

        mom = partition.sum(moments)
        k = self.m * self.n
        self.volume = float(mom[-1])
        self.constant = float(np.sqrt(mom[k:2 * k].sum() / self.volume)) if self.volume > 0 else 1.0
        self._integrals = np.concatenate([mom[:k], [self.constant * self.volume]])
        self._norms = np.sqrt(np.concatenate(norms2) + self.constant**2) if norms2 else np.zeros(0)

    @property
    def n_rows(self) -> int:
        return self.m * self.n + 1

    def _products(self, sig: np.ndarray, bpsi: np.ndarray) -> np.ndarray:
        r""":math:`d \odot \sigma_q^\top B_q\Psi` per point, ``(q, m, n)``."""
        return np.matmul(sig.transpose(0, 2, 1), bpsi) * self.row_scale

    def integrals(self) -> np.ndarray:
        return self._integrals.copy()

    def correlations(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r)
        R = r[:-1].reshape(self.m, self.n) * self.row_scale
        c0 = self.constant * r[-1]

        def block(sig: np.ndarray, bpsi: np.ndarray) -> np.ndarray:
            Y = (sig.reshape(-1, self.m) @ R).reshape(bpsi.shape)
            return (Y * bpsi).sum(axis=(1, 2)) + c0

        return self.partition.blockwise(block, self.sigma, self.BPsi)

    def column(self, i: int) -> np.ndarray:
        return np.concatenate([((self.sigma[i].T @ self.BPsi[i]) * self.row_scale).ravel(), [self.constant]])

    def column_norms(self) -> np.ndarray:
        return self._norms.copy()


@final
class DenseIntegrand(Integrand):
    """An explicit ``G_local (n_rows, n_local)`` over the owned points (small problems, tests).

    Examples
    --------
    >>> from sciml.meshes import box_mesh_2d
    >>> from sciml.solvers.rom.fem import Discretisation
    >>> disc = Discretisation(*box_mesh_2d(8, 4, 2.0, 1.0), "quad")
    >>> x, y = disc.qp_coords.T
    >>> G = np.stack([x**i * y**j for i in range(3) for j in range(3)])  # polynomials of degree <= 2 per axis
    >>> res = ecm(DenseIntegrand(G, Partition(disc)), tol=1e-10)
    >>> res.n_points <= 9, bool(res.residual <= 1e-10)
    (True, True)
    """

    def __init__(self, G: np.ndarray, partition: Partition, weights: np.ndarray | None = None) -> None:
        G = np.asarray(G, dtype=np.float64)
        if G.ndim != 2 or G.shape[1] != partition.n_local:
            raise ValueError(f"DenseIntegrand: expected G of shape (n_rows, {partition.n_local}), got {G.shape}")
        self.G, self.partition = G, partition
        self.weights = partition.disc.qp_weights[partition.points] if weights is None else np.asarray(weights)
        self._Gt = np.ascontiguousarray(G.T)

    @property
    def n_rows(self) -> int:
        return self.G.shape[0]

    def integrals(self) -> np.ndarray:
        return self.partition.sum(lambda b, s: self.weights[s] @ self._Gt[s])

    def correlations(self, r: np.ndarray) -> np.ndarray:
        return self.partition.blockwise(lambda g: g @ r, self._Gt)

    def column(self, i: int) -> np.ndarray:
        return self._Gt[i].copy()

    def column_norms(self) -> np.ndarray:
        return np.sqrt((self._Gt**2).sum(axis=1))


@dataclass(frozen=True)
class ECMResult:
    r"""Reduced quadrature.

    Attributes
    ----------
    points : ndarray, shape ``(p,)``, int
        Global integration-point indices, in the order they were chosen.
    weights : ndarray, shape ``(p,)``, > 0
    residual : float
        :math:`\|G_{:,S}\hat w - b\| / \|b\|` reached.
    iterations : int
        Correlation passes over all points made by this call.
    """

    points: np.ndarray
    weights: np.ndarray
    residual: float
    iterations: int

    @property
    def n_points(self) -> int:
        return int(self.points.size)


class _NNLS:
    """Lawson-Hanson NNLS over a growing set of candidate columns, warm-started.

    The candidates' columns ``A`` ``(n_rows, c)`` are stored once, with their Gram
    matrix :math:`A^\\top A` and :math:`A^\\top b` (one ``O(n_rows c)`` product per new
    candidate). The passive set (candidates of positive weight) is factorised as
    :math:`A_P^\\top A_P = U^\\top U`; a candidate enters by appending a row and a column to
    ``U`` (one triangular solve) and leaves by a rank-1 update of the trailing block, so
    that a change of the passive set costs :math:`O(k^2)`, ``k = |P|``, independent of
    ``n_rows`` (the QR updates of scipy copy the ``n_rows x k`` factor each time).
    Least-squares solutions of the normal equations are accurate enough here: the
    columns are far from collinear once chosen by the greedy loop, and the residual is
    always recomputed from ``A`` itself.
    """

    def __init__(self, b: np.ndarray) -> None:
        self.b = b
        self.n = 0
        self._A = np.zeros((b.size, 64))
        self._G = np.zeros((64, 64))
        self._Ab = np.zeros(64)
        self.w = np.zeros(0)
        self.passive: list[int] = []
        self.U = np.zeros((0, 0))

    @property
    def A(self) -> np.ndarray:
        return self._A[:, :self.n]

    def add(self, cols: np.ndarray) -> None:
        """New candidates (weight 0), ``cols (n_rows, k)``."""
        k = cols.shape[1]
        if self.n + k > self._A.shape[1]:
            cap = 2 * (self.n + k)
            A, G, Ab = np.zeros((self.b.size, cap)), np.zeros((cap, cap)), np.zeros(cap)
            A[:, :self.n], G[:self.n, :self.n], Ab[:self.n] = self.A, self._G[:self.n, :self.n], self._Ab[:self.n]
            self._A, self._G, self._Ab = A, G, Ab
        n0, n1 = self.n, self.n + k
        self._A[:, n0:n1] = cols
        cross = self._A[:, :n1].T @ cols  # (n1, k)
        self._G[:n1, n0:n1] = cross
        self._G[n0:n1, :n1] = cross.T
        self._Ab[n0:n1] = cols.T @ self.b
        self.n = n1
        self.w = np.concatenate([self.w, np.zeros(k)])

    def add_rows(self, rows: np.ndarray, b: np.ndarray) -> None:
        r"""New rows ``rows (k, n)`` of the stored candidates, with their right-hand side ``b (k,)``:
        the Gram matrix and :math:`A^\top b` gain :math:`R^\top R` and :math:`R^\top b_R` (no pass over
        the old rows). The passive set must be refactorised (:meth:`start`) before it is used."""
        k, n = rows.shape[0], self.n
        self._A = np.vstack([self._A, np.zeros((k, self._A.shape[1]))])
        self._A[-k:, :n] = rows
        self._G[:n, :n] += rows.T @ rows
        self._Ab[:n] += rows.T @ b
        self.b = np.concatenate([self.b, b])

    def set_row(self, i: int, row: np.ndarray, b_i: float) -> None:
        """Replace row ``i`` of the stored candidates by ``row (n,)`` and its right-hand side by ``b_i``
        (a rank-2 change of the Gram matrix). Refactorise (:meth:`start`) before use."""
        n, old = self.n, self._A[i, :self.n].copy()
        self._G[:n, :n] += np.outer(row, row) - np.outer(old, old)
        self._Ab[:n] += row * b_i - old * self.b[i]
        self._A[i, :n] = row
        self.b = self.b.copy()
        self.b[i] = b_i

    def keep(self, idx: np.ndarray) -> None:
        """Keep the candidates ``idx`` only (in that order), with their weights."""
        idx = np.asarray(idx, dtype=np.int64)
        k = idx.size
        cap = max(64, 2 * k)
        A, G, Ab = np.zeros((self.b.size, cap)), np.zeros((cap, cap)), np.zeros(cap)
        A[:, :k], G[:k, :k], Ab[:k] = self._A[:, idx], self._G[np.ix_(idx, idx)], self._Ab[idx]
        self._A, self._G, self._Ab, self.n = A, G, Ab, k
        self.start(self.w[idx])

    def residual(self) -> np.ndarray:
        """:math:`b - A w`, from the stored columns."""
        return self.b - self.A @ self.w

    def _factor(self) -> None:
        P = np.asarray(self.passive, dtype=np.int64)
        self.U = np.linalg.cholesky(self._G[np.ix_(P, P)]).T if P.size else np.zeros((0, 0))

    def _enter(self, j: int) -> bool:
        """Append candidate ``j`` to the passive set; False (and no change) if it is numerically
        dependent on the passive columns."""
        P = np.asarray(self.passive, dtype=np.int64)
        d = self._G[j, j]
        u = sla.solve_triangular(self.U, self._G[P, j], trans="T", check_finite=False) if P.size else np.zeros(0)
        rho2 = d - u @ u
        if not rho2 > 1e-12 * d:
            return False
        k = P.size
        U = np.zeros((k + 1, k + 1))
        U[:k, :k], U[:k, k], U[k, k] = self.U, u, np.sqrt(rho2)
        self.U = U
        self.passive.append(j)
        return True

    def _leave(self, positions: np.ndarray) -> None:
        for pos in sorted(positions.tolist(), reverse=True):
            del self.passive[pos]
            k = self.U.shape[0]
            # U without column pos is U's "R" with a column deleted: Givens back to triangular
            _, R = sla.qr_delete(np.eye(k), self.U, pos, 1, which="col", overwrite_qr=True, check_finite=False)
            self.U = np.ascontiguousarray(R[:k - 1])

    def residual_norm(self) -> float:
        """:math:`\\|b - A_P w_P\\|` from the Gram matrix, :math:`O(k^2)` (no pass over the rows)."""
        P = np.asarray(self.passive, dtype=np.int64)
        w = self.w[P]
        Uw = self.U @ w if P.size else np.zeros(0)
        r2 = self.b @ self.b - 2.0 * w @ self._Ab[P] + Uw @ Uw
        return float(np.sqrt(max(r2, 0.0)))

    def _inner(self) -> list[int]:
        """Lawson-Hanson's inner loop from feasible weights; returns the candidates that left."""
        left: list[int] = []
        for _ in range(4 * len(self.passive) + 4):
            if not self.passive:
                return left
            P = np.asarray(self.passive)
            y = sla.solve_triangular(self.U, self._Ab[P], trans="T", check_finite=False)
            z = sla.solve_triangular(self.U, y, check_finite=False)
            if np.all(z > 0.0):
                self.w[P] = z
                return left
            w = self.w[P]
            bad = np.flatnonzero(z <= 0.0)
            denom = w[bad] - z[bad]
            ratios = np.where(denom > 0.0, w[bad] / np.where(denom > 0.0, denom, 1.0), 0.0)
            j = int(np.argmin(ratios))
            w = w + ratios[j] * (z - w)
            out = w <= 1e-14 * float(np.max(np.abs(w), initial=0.0))
            out[bad[j]] = True
            self.w[P] = np.where(out, 0.0, w)
            left.extend(P[out].tolist())
            self._leave(np.flatnonzero(out))
        raise RuntimeError("ecm: the NNLS inner loop did not terminate")

    def start(self, w0: np.ndarray) -> None:
        """Warm start from feasible weights ``w0 >= 0`` on all candidates, kept as they are (not
        re-solved) until the next point enters: then the new point can take up what the new
        rows need, and the step back from ``w0`` drops fewer old points."""
        self.w = np.array(w0, dtype=np.float64)
        self.passive = np.flatnonzero(self.w > 0.0).tolist()
        self._factor()

    def enter(self, j: int) -> None:
        """Candidate ``j`` joins the passive set; the inner loop restores feasibility. Candidates
        that leave stay out (no re-entry, so that near-degenerate columns cannot cycle)."""
        if self._enter(j):
            self._inner()


def _greedy(nnls: _NNLS, candidates: np.ndarray, score, column, part: Partition, tol: float, cap: int,
            batch: int) -> tuple[np.ndarray, int]:
    r"""The NNOMP loop (module docstring, steps 1-3) on ``nnls``, whose stored columns are those of
    the global points ``candidates``; returns the candidates (grown) and the number of
    correlation passes. ``score(r)`` gives the normalised correlations
    :math:`G_q^\top r / \|G_q\|` at the owned points (``-inf``: never a candidate). A pass whose
    residual is unchanged (a re-admission after a stall) reuses the previous scores.
    """
    nb = float(np.linalg.norm(nnls.b))
    r = nnls.residual()
    iterations, readmit, stalls = 0, False, 0
    cached = None  # scores of the current residual
    while np.linalg.norm(r) > tol * nb and len(nnls.passive) < cap and stalls < 3:
        before = float(np.linalg.norm(r))
        if cached is None:
            cached = score(r)
            iterations += 1
        scores = cached.copy()
        # candidates that left the support stay out (no cycling) until the greedy stalls without them
        excluded = candidates[nnls.passive] if readmit else candidates
        mine = part.owned_mask(excluded)
        scores[part.local_index(excluded[mine])] = -np.inf
        best = part.top(scores, batch, column)
        if not best or not best[0][1] > 1e-13 * nb:
            if readmit:
                break  # no point can lower the residual: the NNLS optimum over all points
            readmit = True
            continue
        readmit = False
        fresh = [(point, col) for point, score_, col in best
                 if score_ > 1e-13 * nb and not np.any(candidates == point)]
        if fresh:  # one product with all stored columns for the whole batch
            candidates = np.append(candidates, [p for p, _ in fresh])
            nnls.add(np.column_stack([c for _, c in fresh]))
        for point, score_, col in best:
            if not score_ > 1e-13 * nb or len(nnls.passive) >= cap:
                break
            nnls.enter(int(np.flatnonzero(candidates == point)[0]))
            if nnls.residual_norm() <= tol * nb:
                break
        r = nnls.residual()
        cached = None
        stalls = stalls + 1 if np.linalg.norm(r) >= (1.0 - 1e-9) * before else 0
    return candidates, iterations


def ecm(
    integrand: Integrand,
    tol: float,
    initial: ECMResult | None = None,
    max_points: int | None = None,
    batch: int = 1,
) -> ECMResult:
    r"""Empirical cubature of ``integrand`` to relative residual ``tol`` (see the module docstring).

    Parameters
    ----------
    integrand : Integrand
    tol : float
        Relative residual :math:`\|G_S \hat w - b\|/\|b\|` to reach.
    initial : ECMResult, optional
        A previous cubature (for other rows): warm start of the update.
    max_points : int, optional
        Cap on the number of points (default and upper bound: ``n_rows``, the size of a
        basic NNLS solution).
    batch : int
        Points taken from each correlation pass (the best ``batch`` ones, entering one
        after the other, each followed by the inner loop). 1 is plain NNOMP; larger
        values trade a few extra points for fewer passes over all points (a stagewise
        variant, which the adaptive updates use).

    Returns
    -------
    ECMResult
        Identical on every rank, whatever the number of ranks.
    """
    if not tol > 0.0:
        raise ValueError(f"ecm: expected tol > 0, got {tol}")
    part = integrand.partition
    b = integrand.integrals()
    nb = float(np.linalg.norm(b))
    if nb == 0.0:
        return ECMResult(np.zeros(0, np.int64), np.zeros(0), 0.0, 0)
    cap = b.size if max_points is None else min(int(max_points), b.size)
    norms = integrand.column_norms()
    usable = norms > 0.0
    inv = np.where(usable, 1.0 / np.where(usable, norms, 1.0), 0.0)

    nnls = _NNLS(b)
    candidates = np.zeros(0, np.int64)
    if initial is not None and initial.n_points:
        candidates = np.asarray(initial.points, dtype=np.int64)
        nnls.add(integrand.columns(candidates))
        nnls.start(np.asarray(initial.weights, dtype=np.float64))

    def score(r: np.ndarray) -> np.ndarray:
        return np.where(usable, integrand.correlations(r) * inv, -np.inf)

    candidates, iterations = _greedy(nnls, candidates, score, integrand.column, part, tol, cap, batch)
    r = nnls.residual()
    P = np.asarray(sorted(nnls.passive), dtype=np.int64)
    return ECMResult(candidates[P], nnls.w[P], float(np.linalg.norm(r) / nb), iterations)


@final
class StressCubature:
    r"""The ECM of the stress integrand, kept up to date as stress snapshots and basis directions
    are added (the update of the adaptive ROM).

    The rows are :math:`g_{se}(x_q) = \sigma_s(x_q)\cdot(B_q e_e)` for the stress snapshots
    :math:`\sigma_s` and an :math:`M`-orthonormal set of directions :math:`e_e` that only grows
    (the initial POD modes, then the part of each new basis outside their span), and the
    constant row :math:`c` of :class:`StressIntegrand` (:math:`c^2|\Omega|` the sum of the
    rows' squared :math:`L^2` norms). Because old rows are never rotated, an update adds two
    row blocks only: (old snapshots :math:`\times` new directions) and (new snapshots
    :math:`\times` all directions). For them :meth:`update` forms the explicit block
    :math:`G_\mathrm{new}` ``(n_local, R)`` once (:math:`6 m j + 6 k n` flops per point); then

    * :math:`b`, :math:`c`, the column norms and the stored NNLS columns at the current points
      grow by those rows only (:meth:`_NNLS.add_rows`: the Gram matrix gains
      :math:`G_{\mathrm{new},S}^\top G_{\mathrm{new},S}`; the old rows and their Gram entries
      are reused as they are, nothing is recomputed over the old snapshots);
    * the NNOMP restarts from the current points and weights (:func:`ecm`'s loop); its
      correlation passes lay the residual out on the (snapshot, direction) grid, one product
      per block of points, in single precision (they only rank points); a pass whose
      residual did not change is not repeated;
    * the weights are re-solved by the incremental NNLS (Cholesky appended to and
      downdated, see :class:`_NNLS`), and points whose weight drops to 0 leave.

    Most of the cost of an update is that NNLS: with :math:`10^{-5}` and some hundred points,
    each point that enters makes others leave (the least-squares solution on the support
    swings to negative weights), and the loop climbs back point by point. Scoring points by
    the new rows alone, or freeing only the old weights the new rows pull on most, was
    tried and made it worse (more exchanges).

    For any basis :math:`\Psi` whose span lies in that of the directions, the force
    integrands :math:`\sigma_s : \varepsilon(\psi_k)` are orthonormal combinations of the
    rows, so their residual is at most the one reached here.

    Parameters
    ----------
    sigma : ndarray, shape ``(n_local, 6, m)``
        Stress snapshots at the owned points.
    BE : ndarray, shape ``(n_local, 6, n)``
        :math:`B_q E` of the initial directions (:func:`~sciml.solvers.rom.reduced.mode_strains`).
    partition : Partition
    tol : float
        Relative residual of every call (:func:`ecm`).
    batch : int
        Points per correlation pass.

    Attributes
    ----------
    result : ECMResult
        The current points and weights (``iterations``: correlation passes of the last call).
    """

    def __init__(self, sigma: np.ndarray, BE: np.ndarray, partition: Partition, tol: float, batch: int = 1) -> None:
        integrand = StressIntegrand(sigma, BE, partition)
        self.partition, self.tol, self.batch = partition, float(tol), int(batch)
        self.sigma, self.BE = sigma, BE
        self._sigma32, self._BE32 = sigma.astype(np.float32), BE.astype(np.float32)
        self.weights = integrand.weights
        self.blocks = [(0, integrand.m, 0, integrand.n)]  # (s0, s1, e0, e1), rows snapshot-major
        self._grid = self._grid_rows()
        self.volume = integrand.volume
        self._force2 = integrand.constant**2 * integrand.volume
        self._norms2 = np.maximum(integrand.column_norms() ** 2 - integrand.constant**2, 0.0)
        first = ecm(integrand, tol, batch=batch)
        b = integrand.integrals()
        self._nnls = _NNLS(np.concatenate([b[-1:], b[:-1]]))  # the constant row first, then the blocks
        self.points = first.points
        if first.n_points:
            cols = integrand.columns(first.points)
            self._nnls.add(np.vstack([cols[-1:], cols[:-1]]))
            self._nnls.start(first.weights)
        self.result = first

    @property
    def constant(self) -> float:
        return float(np.sqrt(self._force2 / self.volume)) if self.volume > 0 else 1.0

    def state_dict(self) -> dict:
        """Everything an update depends on (this rank's rows, the NNLS factors, the points), without
        the partition and the single-precision copies: with :meth:`from_state_dict` the next
        updates are bit-for-bit the same."""
        return {k: v for k, v in vars(self).items() if k not in ("partition", "_sigma32", "_BE32")}

    @classmethod
    def from_state_dict(cls, state: dict, partition: Partition) -> "StressCubature":
        """The cubature of :meth:`state_dict`, on ``partition`` (the one it was made on)."""
        out = cls.__new__(cls)
        out.__dict__.update(state)
        out.partition = partition
        out._sigma32, out._BE32 = out.sigma.astype(np.float32), out.BE.astype(np.float32)
        return out

    def _block_values(self, sig: np.ndarray, be: np.ndarray, blocks) -> np.ndarray:
        """Rows of ``blocks`` at the points of ``sig (q, 6, m)``, ``be (q, 6, n)``: ``(q, rows)``."""
        out = [np.matmul(sig[:, :, s0:s1].transpose(0, 2, 1), be[:, :, e0:e1]).reshape(sig.shape[0],
                                                                                    (s1 - s0) * (e1 - e0))
               for s0, s1, e0, e1 in blocks]  # explicit widths: a rank without blocks sees 0 points
        return np.concatenate(out, axis=1) if out else np.zeros((sig.shape[0], 0))

    def _grid_rows(self) -> np.ndarray:
        """Position ``s n + e`` in the full (snapshot, direction) grid of each force row, ``(n_rows - 1,)``.
        The blocks tile the grid exactly once."""
        n = self.BE.shape[2]
        return np.concatenate([(np.arange(s0, s1)[:, None] * n + np.arange(e0, e1)[None, :]).ravel()
                               for s0, s1, e0, e1 in self.blocks])

    def column(self, i: int) -> np.ndarray:
        """All rows at local point ``i``, ``(n_rows,)``."""
        full = (self.sigma[i].T @ self.BE[i]).ravel()
        return np.concatenate([[self.constant], full[self._grid]])

    def _correlations(self, r: np.ndarray) -> np.ndarray:
        r""":math:`G^\top r` over all rows at the owned points: one product per block of points with
        the residual laid out on the (snapshot, direction) grid, ``(m, n)``.

        In single precision: the scores only rank the points (the residual, the weights and the
        stopping test use the float64 columns); rounding is :math:`\sim 10^{-7}\|G_q\|\|r\|`,
        far below the scores that still matter (:math:`\sim 10^{-8}\|G_q\|\|b\|` at
        :math:`\|r\| \approx 10^{-5}\|b\|`), and the pass, which dominates an update, costs half."""
        m, n = self.sigma.shape[2], self.BE.shape[2]
        R = np.zeros(m * n)
        R[self._grid] = r[1:]
        R = R.reshape(m, n).astype(np.float32)

        def block(sig: np.ndarray, be: np.ndarray) -> np.ndarray:
            Y = (sig.reshape(-1, m) @ R).reshape(be.shape)
            return np.einsum("qij,qij->q", Y, be).astype(np.float64)

        return self.partition.blockwise(block, self._sigma32, self._BE32) + self.constant * r[0]

    def update(self, sigma: np.ndarray, BJ: np.ndarray) -> ECMResult:
        """Add stress snapshots ``sigma (n_local, 6, k)`` and directions with strains ``BJ (n_local, 6, j)``
        (orthonormal to the previous ones); update the points and weights (see the class docstring)."""
        part, nnls = self.partition, self._nnls
        m, n = self.sigma.shape[2], self.BE.shape[2]
        k, j = sigma.shape[2], BJ.shape[2]
        if sigma.shape[:2] != self.sigma.shape[:2] or BJ.shape[:2] != self.BE.shape[:2]:
            raise ValueError(f"StressCubature.update: expected sigma (n_local, 6, k) and BJ (n_local, 6, j) with "
                             f"n_local = {self.sigma.shape[0]}, got {sigma.shape} and {BJ.shape}")
        self.sigma = np.concatenate([self.sigma, sigma], axis=2)
        self.BE = np.concatenate([self.BE, BJ], axis=2)
        self._sigma32 = np.concatenate([self._sigma32, sigma.astype(np.float32)], axis=2)
        self._BE32 = np.concatenate([self._BE32, BJ.astype(np.float32)], axis=2)
        new = ([(0, m, n, n + j)] if m and j else []) + ([(m, m + k, 0, n + j)] if k else [])
        if not new:
            return self.result
        self.blocks.extend(new)
        self._grid = self._grid_rows()
        G = part.blockwise(lambda s, e: self._block_values(s, e, new), self.sigma, self.BE)  # (n_local, R)
        R = G.shape[1]
        w = self.weights
        mom = part.sum(lambda _, s: np.concatenate([G[s].T @ w[s], (G[s] * G[s]).T @ w[s]]))
        b_new = mom[:R]
        self._force2 += float(mom[R:].sum())
        self._norms2 = self._norms2 + (G * G).sum(axis=1)
        c = self.constant

        # the stored columns gain the new rows; the constant row takes the new c
        candidates = np.asarray(self.points, dtype=np.int64)
        keep = np.asarray(sorted(nnls.passive), dtype=np.int64)
        nnls.keep(keep)
        candidates = candidates[keep] if candidates.size else candidates
        mine = np.flatnonzero(part.owned_mask(candidates))
        rows = {int(i): G[part.local_index(candidates[i])] for i in mine}
        merged: dict[int, np.ndarray] = {}
        for chunk in part.comm.allgather(rows):
            merged.update(chunk)
        A_new = np.stack([merged[i] for i in range(candidates.size)], axis=1) if candidates.size else \
            np.zeros((R, 0))
        nnls.add_rows(A_new, b_new)
        nnls.set_row(0, np.full(candidates.size, c), c * self.volume)
        nnls.start(nnls.w)

        inv = 1.0 / np.sqrt(self._norms2 + c * c)
        candidates, iterations = _greedy(nnls, candidates, lambda r: self._correlations(r) * inv, self.column, part,
                                         self.tol, nnls.b.size, self.batch)
        P = np.asarray(sorted(nnls.passive), dtype=np.int64)
        nb = float(np.linalg.norm(nnls.b))
        self.points = candidates
        self.result = ECMResult(candidates[P], nnls.w[P], float(np.linalg.norm(nnls.residual()) / nb), iterations)
        return self.result
