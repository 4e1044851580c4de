r"""The hyper-reduced model and its online Newton solver.

Displacements are sought as :math:`u = \ell\lambda + \Psi q`: :math:`\ell` ``(n_dof, G)`` the
Dirichlet lift at unit load factor of each load group (the imposed values on the fixed dofs,
zero elsewhere), :math:`\lambda` ``(G,)`` the load factors of the step,
:math:`\Psi` ``(n_dof, n)`` POD modes vanishing on the fixed dofs, :math:`q` ``(n,)``.
Galerkin projection of the internal forces, integrated by the reduced quadrature
:math:`(x_q, \hat w_q)_{q\in\mathcal R}`, minus the projected external load
:math:`\Psi^\top f^\mathrm{ext}\lambda` (body forces, surface loads; exact, precomputed once per basis):

.. math::

    r(q) = \sum_{q\in\mathcal R} \hat w_q (B_q\Psi)^\top \sigma_q - \Psi^\top f^\mathrm{ext}\lambda, \qquad
    K(q) = \sum_{q\in\mathcal R} \hat w_q (B_q\Psi)^\top \mathbb C_q (B_q\Psi),
    \qquad \varepsilon_q = B_q\ell\lambda + (B_q\Psi) q,

with :math:`\sigma_q, \mathbb C_q` from the constitutive update at the reduced points
only. :math:`B_q\Psi` ``(6, n)`` and :math:`B_q\ell` are precomputed per reduced point, so
one Newton iteration costs :math:`O(|\mathcal R|\, n^2)` whatever the size of the
high-fidelity mesh. Points of weight 0 (Gappy-POD sampling and monitor points) are
updated like the others (the indicator reads their plastic strain) and add nothing
to the sums.

The first iteration of a step linearises at the previous state with the new
temperature, including the load increment (:math:`K\,\delta q = -(r + k_{\Delta\lambda} - \Psi^\top
f^\mathrm{ext}\Delta\lambda)`, :math:`k_{\Delta\lambda} = \sum \hat w_q (B_q\Psi)^\top \mathbb C_q
B_q\ell\Delta\lambda`), as the high-fidelity Newton does.

Under MPI each rank updates the reduced points it owns; per-block partial sums of
:math:`r, K` are added in block order (:meth:`Comm.ordered_sum`) every iteration, and
the small system is solved redundantly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import final

import numpy as np

from sciml.errors import RunError

from .distributed import Partition
from .fem import ROUND_OFF, load_vector
from .material import MaterialState, ThermoViscoplasticJ2

__all__ = ["ReducedState", "ReducedModel", "mode_strains"]


def mode_strains(partition: Partition, vectors: np.ndarray, points: np.ndarray) -> np.ndarray:
    """:math:`B_q V` at the global ``points`` (owned by this rank) for replicated ``vectors (n_dof, k)``,
    shape ``(len(points), 6, k)``."""
    disc = partition.disc
    points = np.asarray(points, dtype=np.int64)
    cells = points // disc.n_qp_cell
    V = np.asarray(vectors, dtype=np.float64)[disc.cell_dofs[cells]]  # (r, nd, k)
    return np.einsum("qij,qjk->qik", disc.B[points], V)


@dataclass(frozen=True)
class ReducedState:
    """State of the reduced model.

    Attributes
    ----------
    t : float
    load_factor : ndarray, shape ``(G,)``
    q : ndarray, shape ``(n,)``
        Reduced coordinates (replicated).
    material : MaterialState
        Internal variables at the reduced points owned by this rank.
    sigma : ndarray, shape ``(r_local, 6)``
    """

    t: float
    load_factor: np.ndarray
    q: np.ndarray
    material: MaterialState
    sigma: np.ndarray


#: Smallest eigenvalue of the reduced elastic stiffness, relative to the largest, below which a reduced
#: quadrature is refused (:meth:`ReducedModel._check_stiffness`).
_SINGULAR = 1e-12


@final
class ReducedModel:
    r"""Hyper-reduced quasi-static model on a reduced quadrature.

    Parameters
    ----------
    partition : Partition
    material : ThermoViscoplasticJ2
    temperature : callable ``T(x (Q, dim), t) -> (Q,)``
    modes : ndarray, shape ``(n_dof, n)``
        Replicated POD modes (zero on the fixed dofs).
    lift : ndarray, shape ``(n_dof,)`` or ``(n_dof, G)``
        Displacement at unit load factor (of each group) on the fixed dofs, zero elsewhere.
    points : ndarray, shape ``(p,)``
        Reduced points (global indices, increasing).
    weights : ndarray, shape ``(p,)``
        Reduced weights (0 for sampling-only points).
    rtol : float
        Newton stops when :math:`\|r\| \le` ``rtol``
        :math:`\max(\max_i \|r_i\|, \|\sum \hat w_q |B_q\Psi|^\top|\sigma_q|\|)`, or at round-off
        (:data:`~sciml.solvers.rom.fem.ROUND_OFF`) of the force scale of the current strain,
        :math:`\|\sum \hat w_q |B_q\Psi|^\top|C_q\varepsilon_q|\|` (a body expanding freely, where the stress
        and every residual are round-off).
    max_iter : int
    external : ndarray, shape ``(n_dof,)`` or ``(n_dof, G)``, optional
        External nodal load at unit load factor (of each group; replicated); default none.

    Notes
    -----
    Point-wise quantities are kept for the owned reduced points only; :meth:`sampled`
    gathers a per-point value (e.g. :math:`p`) over all ranks in the order of ``points``.
    """

    def __init__(self, partition: Partition, material: ThermoViscoplasticJ2,
                 temperature: Callable[[np.ndarray, float], np.ndarray], modes: np.ndarray, lift: np.ndarray,
                 points: np.ndarray, weights: np.ndarray, rtol: float = 1e-9, max_iter: int = 25,
                 external: np.ndarray | None = None) -> None:
        points = np.asarray(points, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        if points.ndim != 1 or points.shape != weights.shape or np.any(np.diff(points) <= 0):
            raise ValueError(f"ReducedModel: expected increasing points and weights of one shape (p,), "
                             f"got {points.shape} and {weights.shape}")
        self.partition, self.material, self.temperature = partition, material, temperature
        self.points, self.weights = points, weights
        self.n_modes = modes.shape[1]
        lift = np.asarray(lift, dtype=np.float64).reshape(modes.shape[0], -1)
        self.n_factors = lift.shape[1]
        external = (np.zeros((modes.shape[0], self.n_factors)) if external is None
                    else np.asarray(external, dtype=np.float64).reshape(modes.shape[0], -1))
        if external.shape[1] != self.n_factors:
            raise ValueError(f"ReducedModel: expected a lift and an external load of as many load groups, got "
                             f"{self.n_factors} and {external.shape[1]}")
        self.f_ext = np.asarray(modes, dtype=np.float64).T @ external  # (n, G)
        self.rtol, self.max_iter = rtol, max_iter
        mine = partition.owned_mask(points)
        self.slots = np.flatnonzero(mine)  # positions of the owned points in `points`
        self.local_points = points[mine]
        self.w = weights[mine]
        self.BPsi = mode_strains(partition, modes, self.local_points)
        self.Blift = mode_strains(partition, lift, self.local_points)  # (r_local, 6, G)
        self.coords = partition.disc.qp_coords[self.local_points]
        blocks = partition.block_of_local()[partition.local_index(self.local_points)] if self.local_points.size \
            else np.zeros(0, np.int64)
        self._starts = np.flatnonzero(np.r_[True, np.diff(blocks) != 0]) if blocks.size else np.zeros(0, np.int64)
        self._blocks = blocks[self._starts] if blocks.size else np.zeros(0, np.int64)
        self._wB = self.w[:, None, None] * self.BPsi  # (r_local, 6, n)
        self._check_stiffness()

    def _check_stiffness(self) -> None:
        r"""Refuse a reduced quadrature under which the reduced elastic stiffness
        :math:`\sum \hat w_q (B_q\Psi)^\top C_q B_q\Psi` (at :math:`t = 0`) is singular: too few points
        with positive weight for the modes (e.g. an ECM tolerance so loose that it kept one point for
        eleven modes), where Newton would return an arbitrary solution without a sign of trouble."""
        n = self.n_modes
        if n == 0:
            return
        if self.points.size == 0:
            raise RunError(f"ReducedModel: no reduced points for {n} modes (the ECM found none)")
        T = np.asarray(self.temperature(self.coords, 0.0), dtype=np.float64).reshape(-1)
        C = self.material.elastic_tangent(T)
        zeros = np.zeros((self.local_points.size, 6))
        K = self._assemble(zeros, np.matmul(C, self.BPsi), None, zeros)[n:n + n * n].reshape(n, n)
        lam = np.linalg.eigvalsh(0.5 * (K + K.T))
        if not lam[0] > _SINGULAR * lam[-1]:
            k = int(np.count_nonzero(self.weights))
            raise RunError(f"ReducedModel: the reduced quadrature ({k} point{'s' if k != 1 else ''} with positive "
                             f"weight) cannot integrate the stiffness of {n} modes: its smallest eigenvalue is "
                             f"{lam[0]:.3g} of the largest {lam[-1]:.3g}; tighten the ECM tolerance (rom.ecm_tol)")

    @property
    def n_points(self) -> int:
        return int(self.points.size)

    def initial_state(self, material: MaterialState | None = None, q: np.ndarray | None = None,
                      t: float = 0.0, load_factor: float | np.ndarray = 0.0) -> ReducedState:
        """A state at ``t``; ``material`` at the owned reduced points (default: virgin), ``q`` (default 0)."""
        r = self.local_points.size
        mat = MaterialState.zeros(r) if material is None else material
        q = np.zeros(self.n_modes) if q is None else np.asarray(q, dtype=np.float64)
        return ReducedState(t, self.load_vector(load_factor), q, mat, np.zeros((r, 6)))

    def _assemble(self, sigma: np.ndarray, CB: np.ndarray, CBlift: np.ndarray | None,
                  Ceps: np.ndarray) -> np.ndarray:
        """:math:`[r, K, \\sum \\hat w|B\\Psi|^\\top|\\sigma|, \\sum \\hat w|B\\Psi|^\\top|C\\varepsilon|,
        k_{\\Delta\\lambda}]` summed over all reduced points: one GEMM per block (``(6 r_b, n)`` operands,
        the block's fixed shape), blocks added in order."""
        n = self.n_modes
        ends = np.r_[self._starts[1:], self.local_points.size].astype(int)
        parts = {}
        for b, s0, s1 in zip(self._blocks.tolist(), self._starts.tolist(), ends.tolist()):
            wB = self._wB[s0:s1].reshape(-1, n)
            pieces = [wB.T @ sigma[s0:s1].reshape(-1), (wB.T @ CB[s0:s1].reshape(-1, n)).ravel(),
                      np.abs(wB).T @ np.abs(sigma[s0:s1]).reshape(-1), np.abs(wB).T @ np.abs(Ceps[s0:s1]).reshape(-1)]
            if CBlift is not None:
                pieces.append(wB.T @ CBlift[s0:s1].reshape(-1))
            parts[b] = np.concatenate(pieces)
        return self.partition.comm.ordered_sum(parts)

    def load_vector(self, load_factor: float | np.ndarray) -> np.ndarray:
        """The ``(G,)`` load factors of a step (:func:`~sciml.solvers.rom.fem.load_vector`)."""
        return load_vector(load_factor, self.n_factors)

    def strain(self, q: np.ndarray, load_factor: float | np.ndarray) -> np.ndarray:
        r""":math:`B_q\ell\lambda + B_q\Psi q` at the owned reduced points, ``(r_local, 6)``."""
        return self.Blift @ self.load_vector(load_factor) + np.einsum("qik,k->qi", self.BPsi, q)

    def solve_step(self, state: ReducedState, t: float, load_factor: float | np.ndarray
                   ) -> tuple[ReducedState, int]:
        """Newton from ``state`` to ``t`` with load factor ``load_factor``; returns the state and the
        number of tangent solves."""
        dt = t - state.t
        if not dt > 0.0:
            raise ValueError(f"ReducedModel.solve_step: expected t > state.t = {state.t}, got {t}")
        n = self.n_modes
        T = np.asarray(self.temperature(self.coords, t), dtype=np.float64).reshape(-1)
        q = state.q.copy()
        target = self.load_vector(load_factor)
        lam = self.load_vector(state.load_factor)
        dlam = target - lam
        history: list[float] = []
        for it in range(self.max_iter + 1):
            eps = self.strain(q, lam)
            sigma, mat, C = self.material.update(eps, state.material, T, dt)
            predictor = it == 0 and bool(dlam.any())
            CBlift = np.einsum("qij,qj->qi", C, self.Blift @ dlam) if predictor else None
            total = self._assemble(sigma, np.matmul(C, self.BPsi), CBlift, np.einsum("qij,qj->qi", C, eps))
            f, K = total[:n] - self.f_ext @ lam, total[n:n + n * n].reshape(n, n)
            k = n + n * n
            # force scales: of the stress, and of the current strain (the stress is round-off where the
            # body expands freely, and so is every residual of a step that starts in equilibrium)
            scale, strain_scale = (float(np.linalg.norm(total[i:i + n])) for i in (k, k + n))
            rhs = f + total[k + 2 * n:] - self.f_ext @ dlam if predictor else f
            history.append(float(np.linalg.norm(rhs)))
            if not predictor and (history[-1] <= self.rtol * max(max(history), scale)
                                  or history[-1] <= ROUND_OFF * strain_scale):
                return ReducedState(t, target, q, mat, sigma), it
            if it == self.max_iter:
                break
            q = q - np.linalg.solve(K, rhs)
            if predictor:
                lam = target
        raise RuntimeError(f"ReducedModel.solve_step: Newton did not converge in {self.max_iter} iterations at "
                           f"t = {t}; residual norms {history}")

    def sampled(self, values: np.ndarray) -> np.ndarray:
        """Per-point ``values (r_local, ...)`` at all reduced points, in the order of ``points``, on every rank."""
        values = np.asarray(values)
        out = np.empty((self.n_points,) + values.shape[1:], dtype=values.dtype)
        for slots, vals in self.partition.comm.allgather((self.slots, values)):
            out[slots] = vals
        return out
