r"""Gappy-POD reconstruction, QDEIM sampling points, and the Gappy-POD error indicator.

QDEIM
-----
Drmač & Gugercin, "A new selection operator for the discrete empirical interpolation
method", SIAM J. Sci. Comput. 38(2), 2016: the sampling points of a basis
:math:`\Phi` ``(n_qp, n)`` are the pivots of the column-pivoted QR factorisation of
:math:`\Phi^\top`. :func:`qdeim` runs that pivoted Gram-Schmidt on the rows of
:math:`\Phi`, distributed over ranks: at step ``j`` the row of largest residual norm
over all points is chosen (ties: smallest global index, :meth:`Partition.argmax`),
its owner broadcasts it, and every rank removes its direction from its own rows
(row-wise operations only, so the choice does not depend on the number of ranks).

Gappy-POD
---------
Everson & Sirovich, "Karhunen-Loève procedure for gappy data", JOSA A 12(8), 1995:
a field known at sampling points only, :math:`\hat p = p(x_{\mathcal S})`, is
approximated as :math:`\Phi\gamma` with
:math:`\gamma = \arg\min \|\hat\Phi\gamma - \hat p\|_2`, :math:`\hat\Phi = \Phi_{\mathcal S,:}`.

Error indicator
---------------
Casenave & Akkari, "An error indicator-based adaptive reduced order model for
nonlinear structural mechanics", MCA 24(2):41, 2019: with :math:`\hat p` the
cumulated plastic strain computed by the reduced model at its reduced points and
:math:`\Phi` the POD basis of :math:`p` snapshots,

.. math::

    E = \frac{\|\hat p - \hat\Phi\gamma\|_2}{\|\hat p\|_2},

and :math:`E = 0` where :math:`\|\hat p\|_\infty \le p_\mathrm{floor}` (no plastic strain yet:
it carries no information there). :math:`p` is cumulative, so after the first plastic step the
indicator keeps measuring the fit of the whole history, also on later elastic steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .distributed import Partition

__all__ = ["qdeim", "GappyPOD"]


def qdeim(basis: np.ndarray, partition: Partition, n_points: int | None = None,
          initial: np.ndarray | None = None) -> np.ndarray:
    """QDEIM points of the distributed ``basis (n_local, n)``: global point indices ``(k,)``.

    ``k = min(n_points, n)`` (default ``n``); fewer when the residual vanishes first
    (rank-deficient basis). Identical on every rank and for any number of ranks.

    With ``initial`` (global indices, e.g. the points of a previous basis that the new one
    extends), the pivoted QR starts with those rows as its first pivots: one block
    projection removes their span from all rows (one product, instead of one pass per
    point), and the search goes on for the directions left; the result is ``initial``
    followed by at most ``min(n_points, n - rank)`` new points.

    Examples
    --------
    >>> from sciml.meshes import box_mesh_2d
    >>> from sciml.solvers.rom.fem import Discretisation
    >>> part = Partition(Discretisation(*box_mesh_2d(4, 2, 2.0, 1.0), "quad"), block_size=2)
    >>> basis = np.zeros((32, 2)); basis[7, 0] = 2.0; basis[20, 1] = 1.0; basis[3] = 0.1
    >>> qdeim(basis, part).tolist()
    [7, 20]
    >>> qdeim(basis, part, initial=np.array([20])).tolist()
    [20, 7]
    """
    X = np.array(basis, dtype=np.float64, copy=True)
    if X.ndim != 2 or X.shape[0] != partition.n_local:
        raise ValueError(f"qdeim: expected a basis of shape ({partition.n_local}, n), got {X.shape}")
    k = X.shape[1] if n_points is None else min(int(n_points), X.shape[1])
    chosen: list[int] = []
    scale = None
    if initial is not None and len(initial):
        chosen = [int(i) for i in dict.fromkeys(np.asarray(initial, dtype=np.int64).tolist())]
        rows = partition.gather_selected(X, np.asarray(chosen, dtype=np.int64))  # (p, n)
        scale = partition.comm.allreduce_max(float(np.max((X * X).sum(axis=1), initial=0.0)))
        _, sv, Vt = np.linalg.svd(rows, full_matrices=False)
        Q = Vt[:int(np.count_nonzero(sv > 1e-12 * np.sqrt(scale)))]  # orthonormal basis of the rows' span
        X = X - partition.blockwise(lambda x: (x @ Q.T) @ Q, X)
        k = min(k, X.shape[1] - Q.shape[0])
    for _ in range(k):
        scores = (X * X).sum(axis=1)
        if chosen:
            c = np.asarray(chosen)
            mine = partition.owned_mask(c)
            scores[partition.local_index(c[mine])] = -np.inf
        point, score, row = partition.argmax(scores, lambda i: X[i].copy())
        if point < 0:
            break
        scale = score if scale is None else scale
        if not score > 1e-24 * scale:
            break
        v = row / np.sqrt(score)
        X -= (X * v).sum(axis=1)[:, None] * v
        chosen.append(point)
    return np.asarray(chosen, dtype=np.int64)


@dataclass(frozen=True)
class GappyPOD:
    r"""A basis known at sampling points, and the least-squares fit through it.

    Attributes
    ----------
    sampled : ndarray, shape ``(s, n)``
        :math:`\hat\Phi`, the basis at the sampling points (replicated).
    p_floor : float
        :math:`\|\hat p\|_\infty` at or below which the indicator is 0 (elastic).

    Examples
    --------
    >>> phi = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> gp = GappyPOD(phi)
    >>> gp.indicator(phi @ [0.3, 0.2]) < 1e-15, round(gp.indicator(np.array([1.0, 1.0, 0.0])), 6)
    (True, 0.816497)
    """

    sampled: np.ndarray
    p_floor: float = 1e-12

    def coefficients(self, values: np.ndarray) -> np.ndarray:
        r""":math:`\gamma = \arg\min \|\hat\Phi\gamma - \hat p\|`, shape ``(n,)``."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.sampled.shape[0],):
            raise ValueError(f"GappyPOD: expected values at the {self.sampled.shape[0]} sampling points, "
                             f"got shape {values.shape}")
        if self.sampled.shape[1] == 0:
            return np.zeros(0)
        return np.linalg.lstsq(self.sampled, values, rcond=None)[0]

    def indicator(self, values: np.ndarray) -> float:
        r""":math:`E = \|\hat p - \hat\Phi\gamma\| / \|\hat p\|`, 0 where :math:`\|\hat p\|_\infty \le` ``p_floor``."""
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0 or float(np.max(np.abs(values))) <= self.p_floor:
            return 0.0
        fit = self.sampled @ self.coefficients(values) if self.sampled.shape[1] else 0.0
        return float(np.linalg.norm(values - fit) / np.linalg.norm(values))
