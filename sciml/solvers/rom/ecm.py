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
and the column norms (one pass over the points).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import final

import numpy as np
import scipy.linalg as sla

from .distributed import Partition

__all__ = ["Integrand", "StressIntegrand", "DenseIntegrand", "ECMResult", "ecm"]


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
    :math:`\int \sigma_s : arepsilon(\psi_k) = 0`, so the force rows alone would be
    integrated exactly by the empty quadrature. The constant row (the volume, as in
    Hernández et al. 2017) makes the problem non-degenerate: the points and weights
    must reproduce the volume *and* annihilate the force integrands, to
    :math:`\mathrm{tol}\,\|b\| pprox \mathrm{tol}\; c\,|\Omega|` in the Euclidean norm
    over all rows. By default :math:`d_{sk} = 1` and :math:`c` is the root mean square of
    the rows' :math:`L^2` norms divided by :math:`|\Omega|^{1/2}`: the constant row weighs
    like a typical force row.

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
        r""":math:`d \odot \sigma_q^	op B_q\Psi` per point, ``(q, m, n)``."""
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
    r = nnls.residual()
    iterations, readmit, stalls = 0, False, 0
    while np.linalg.norm(r) > tol * nb and len(nnls.passive) < cap and stalls < 3:
        before = float(np.linalg.norm(r))
        scores = np.where(usable, integrand.correlations(r) * inv, -np.inf)
        # candidates that left the support stay out (no cycling) until the greedy stalls without them
        excluded = candidates[nnls.passive] if readmit else candidates
        mine = part.owned_mask(excluded)
        scores[part.local_index(excluded[mine])] = -np.inf
        best = part.top(scores, batch, integrand.column)
        iterations += 1
        if not best or not best[0][1] > 1e-13 * nb:
            if readmit:
                break  # no point can lower the residual: the NNLS optimum over all points
            readmit = True
            continue
        readmit = False
        fresh = [(point, col) for point, score, col in best
                 if score > 1e-13 * nb and not np.any(candidates == point)]
        if fresh:  # one product with all stored columns for the whole batch
            candidates = np.append(candidates, [p for p, _ in fresh])
            nnls.add(np.column_stack([c for _, c in fresh]))
        for point, score, col in best:
            if not score > 1e-13 * nb or len(nnls.passive) >= cap:
                break
            nnls.enter(int(np.flatnonzero(candidates == point)[0]))
            if nnls.residual_norm() <= tol * nb:
                break
        r = nnls.residual()
        stalls = stalls + 1 if np.linalg.norm(r) >= (1.0 - 1e-9) * before else 0
    P = np.asarray(sorted(nnls.passive), dtype=np.int64)
    return ECMResult(candidates[P], nnls.w[P], float(np.linalg.norm(r) / nb), iterations)
