r"""Snapshot POD and its incremental update, over an abstract inner-product space.

A :class:`Space` says how columns of a snapshot array are paired,
:math:`\langle a, b\rangle = a^\top M b`, and how they are combined linearly. The
algorithms below only call :meth:`Space.gram` and :meth:`Space.lincomb`, so the same
code runs on replicated dof vectors with the FE mass matrix, on integration-point
fields distributed over MPI ranks, or on plain arrays (:class:`EuclideanSpace`):
the MPI reductions live in the space (:mod:`sciml.solvers.rom.distributed`), as
pyMOR keeps them in its vector arrays.

POD (method of snapshots)
-------------------------
For snapshots :math:`U = [u_1, \dots, u_m]`, the correlation matrix
:math:`C = U^\top M U` (``m x m``) has eigenpairs :math:`C v_k = s_k^2 v_k`; the modes
:math:`\psi_k = U v_k / s_k` are :math:`M`-orthonormal. :func:`pod` keeps the smallest
number ``n`` of modes whose relative projection error in the Frobenius sense is below
``tol``,

.. math::

    \Big(\sum_{k > n} s_k^2 \Big/ \sum_k s_k^2\Big)^{1/2} \le \mathrm{tol},

and modes whose :math:`s_k^2 \le 10^{-13} s_1^2` are dropped whatever ``tol`` is
(below that the method of snapshots cannot resolve them). Signs are fixed: the entry
of largest magnitude of :math:`v_k` (first one on ties) is positive, so the modes do
not depend on LAPACK's sign choice nor on the number of ranks.

Incremental POD
---------------
:func:`pod_update` adds snapshots :math:`W` to a basis :math:`\Psi` with singular values
:math:`S` (Brand, "Incremental singular value decomposition of uncertain data with
missing values", ECCV 2002, in the :math:`M` inner product): :math:`A = \Psi^\top M W`
(two Gram-Schmidt passes), :math:`W - \Psi A = J \rho` with :math:`J` :math:`M`-orthonormal,
then the SVD of the small matrix

.. math::

    K = \begin{pmatrix} \operatorname{diag}(S) & A \\ 0 & \rho \end{pmatrix}
      = \tilde U \tilde S \tilde V^\top,
    \qquad \Psi' = [\Psi, J] \tilde U,

truncated by the same criterion. Without truncation the span of :math:`\Psi'` is the
span of all snapshots seen so far, as a batch POD would give.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import final

import numpy as np
import scipy.linalg as sla

__all__ = ["Space", "EuclideanSpace", "PODBasis", "pod", "pod_update", "truncation_rank", "orthonormalize"]

#: Relative floor on :math:`s_k^2/s_1^2` below which a mode is noise of the method of snapshots.
_EIG_FLOOR = 1e-13


class Space(ABC):
    """Columns of 2D arrays ``(N_local, k)`` seen as vectors of an inner-product space.

    Subclasses implement the two operations the MOR algorithms need. Both must give
    identical results on every rank (and on any number of ranks): the Gram matrix is
    replicated, and :meth:`lincomb` acts on the local rows only.
    """

    @abstractmethod
    def gram(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        r""":math:`A^\top M B`, shape ``(k, l)`` for ``A (N_local, k)`` and ``B (N_local, l)``, on every rank."""

    @abstractmethod
    def lincomb(self, A: np.ndarray, C: np.ndarray) -> np.ndarray:
        """:math:`A C`, shape ``(N_local, l)`` for ``A (N_local, k)`` and ``C (k, l)``."""

    def norm(self, A: np.ndarray) -> np.ndarray:
        r""":math:`\|a_j\|_M` of each column, shape ``(k,)``."""
        return np.sqrt(np.maximum(np.diag(self.gram(A, A)), 0.0))


@final
class EuclideanSpace(Space):
    """:math:`M = I` on arrays held whole by one process (tests, small problems).

    Examples
    --------
    >>> U = np.random.default_rng(0).standard_normal((50, 6))
    >>> basis = pod(U, EuclideanSpace(), tol=0.0)
    >>> np.allclose(basis.modes.T @ basis.modes, np.eye(basis.n_modes))
    True
    """

    def gram(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return np.asarray(A).T @ np.asarray(B)

    def lincomb(self, A: np.ndarray, C: np.ndarray) -> np.ndarray:
        return np.asarray(A) @ np.asarray(C)


@dataclass(frozen=True)
class PODBasis:
    """An :math:`M`-orthonormal basis with the singular values it was built from.

    Attributes
    ----------
    modes : ndarray, shape ``(N_local, n)``
    singular_values : ndarray, shape ``(n,)``, decreasing
    """

    modes: np.ndarray
    singular_values: np.ndarray

    @property
    def n_modes(self) -> int:
        return self.modes.shape[1]


def truncation_rank(singular_values: np.ndarray, tol: float) -> int:
    r"""Smallest ``n`` with :math:`(\sum_{k>n} s_k^2 / \sum_k s_k^2)^{1/2} \le` ``tol``, noise dropped."""
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    if s2.size == 0 or s2[0] <= 0.0:
        return 0
    keep = int(np.count_nonzero(s2 > _EIG_FLOOR * s2[0]))
    tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tail[n] = sum_{k >= n} s2_k
    n = int(np.argmax(np.sqrt(tail / tail[0]) <= tol))
    return min(n, keep)


def _fix_signs(V: np.ndarray) -> np.ndarray:
    """Flip columns so that each one's entry of largest magnitude (first on ties) is positive."""
    if V.size == 0:
        return V
    idx = np.argmax(np.abs(V), axis=0)
    return V * np.where(V[idx, np.arange(V.shape[1])] < 0.0, -1.0, 1.0)


def orthonormalize(A: np.ndarray, space: Space, passes: int = 2) -> np.ndarray:
    """Cholesky-QR, ``passes`` times: the columns of ``A`` made :math:`M`-orthonormal
    (they must be linearly independent). Used to clean modes of the method of snapshots."""
    if A.shape[1] == 0:
        return A
    for _ in range(passes):
        G = space.gram(A, A)
        L = np.linalg.cholesky(0.5 * (G + G.T))
        A = space.lincomb(A, sla.solve_triangular(L, np.eye(L.shape[0]), lower=True).T)
    return A


def pod(U: np.ndarray, space: Space, tol: float, max_modes: int | None = None) -> PODBasis:
    """POD of the snapshots ``U (N_local, m)`` in ``space`` (method of snapshots).

    Parameters
    ----------
    U : ndarray, shape ``(N_local, m)``
    space : Space
        Inner product (and, through it, the MPI distribution of the rows).
    tol : float
        Relative Frobenius projection error allowed (0: keep every resolvable mode).
    max_modes : int, optional
        Upper bound on the number of modes.

    Returns
    -------
    PODBasis
        ``modes (N_local, n)`` :math:`M`-orthonormal, ``singular_values (n,)``.
    """
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2:
        raise ValueError(f"pod: expected snapshots of shape (N, m), got {U.shape}")
    if not tol >= 0.0:
        raise ValueError(f"pod: expected tol >= 0, got {tol}")
    C = space.gram(U, U)
    lam, V = np.linalg.eigh(0.5 * (C + C.T))
    lam, V = np.maximum(lam[::-1], 0.0), V[:, ::-1]
    s = np.sqrt(lam)
    n = truncation_rank(s, tol)
    if max_modes is not None:
        n = min(n, int(max_modes))
    V = _fix_signs(V[:, :n])
    modes = orthonormalize(space.lincomb(U, V / s[:n]), space)
    return PODBasis(modes, s[:n])


def pod_update(basis: PODBasis, W: np.ndarray, space: Space, tol: float,
               max_modes: int | None = None) -> PODBasis:
    r"""Add the snapshots ``W (N_local, k)`` to ``basis`` by an incremental SVD (Brand 2002).

    The new modes are :math:`[\Psi, J]\tilde U` truncated with ``tol`` (see the module
    docstring); the cost is :math:`O(N (n + k)^2)` for the combinations and
    :math:`O((n + k)^3)` for the small SVD, independent of the number of snapshots seen.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 1:
        W = W[:, None]
    Psi, S = basis.modes, basis.singular_values
    if W.shape[0] != Psi.shape[0]:
        raise ValueError(f"pod_update: expected snapshots with {Psi.shape[0]} rows, got {W.shape}")
    n, k = Psi.shape[1], W.shape[1]
    A = np.zeros((n, k))
    R = W
    for _ in range(2):  # classical Gram-Schmidt, twice
        if n:
            a = space.gram(Psi, R)
            R = R - space.lincomb(Psi, a)
            A = A + a
    # R = J rho with J M-orthonormal: eigen-decomposition of the small Gram matrix of R.
    G = space.gram(R, R)
    lam, Wr = np.linalg.eigh(0.5 * (G + G.T))
    lam, Wr = lam[::-1], Wr[:, ::-1]
    scale = max(float(np.sum(S**2)), float(np.sum(space.norm(W) ** 2)))
    r = int(np.count_nonzero(lam > _EIG_FLOOR * scale))
    Wr = _fix_signs(Wr[:, :r])
    sq = np.sqrt(lam[:r])
    J = space.lincomb(R, Wr / sq) if r else np.zeros((Psi.shape[0], 0))
    if r:
        J = orthonormalize(J - space.lincomb(Psi, space.gram(Psi, J)) if n else J, space)
    rho = space.gram(J, R) if r else np.zeros((0, k))
    K = np.block([[np.diag(S), A], [np.zeros((r, n)), rho]])
    Ut, St, _ = np.linalg.svd(K, full_matrices=False)
    m = truncation_rank(St, tol)
    if max_modes is not None:
        m = min(m, int(max_modes))
    Ut = _fix_signs(Ut[:, :m])
    modes = space.lincomb(np.hstack([Psi, J]), Ut)
    return PODBasis(orthonormalize(modes, space, passes=1), St[:m])
