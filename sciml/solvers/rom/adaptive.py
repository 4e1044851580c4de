r"""Error-indicator adaptive POD-ROM (Casenave & Akkari, MCA 24(2):41, 2019).

Offline (:class:`AdaptiveROM` from high-fidelity snapshots of a training loading):

1. POD of the displacements (free part, :math:`M` inner product, tolerance ``pod``);
2. ECM on :math:`\sigma_s : \varepsilon(\psi_k)` (tolerance ``ecm``);
3. POD of the cumulated plastic strain :math:`p` (tolerance ``gappy``, :math:`L^2` product)
   and its QDEIM points, added to the reduced points with weight 0;
4. *monitor points* of the new loading, weight 0 (:func:`monitor_points`): the
   sampling points must see regions the training loading never made plastic.

Online (:meth:`AdaptiveROM.run`), step ``n``: a reduced Newton step gives :math:`\hat p`
at the reduced points and the indicator :math:`E_n` (:class:`~sciml.solvers.rom.gappy.GappyPOD`).
If :math:`E_n >` ``indicator``, the reduced step is discarded and

a. the full state at step ``n-1`` is rebuilt: :math:`u = \ell\lambda + \Psi q`, and the
   internal variables at *all* points by replaying the constitutive update along the
   reduced trajectory since the last synchronised state (see below);
b. one high-fidelity step is solved from it;
c. its :math:`u` and :math:`p` enter the bases by incremental POD (with
   ``tangent_snapshots``, also the consistent-tangent responses of the converged state
   to a unit increment of each load factor, :func:`tangent_response`), its stresses the ECM rows, and
   the ECM is updated incrementally (:class:`~sciml.solvers.rom.ecm.StressCubature`: only
   the rows of the new snapshot and of the new basis directions are formed, the NNOMP
   restarts from the current points and weights); new QDEIM points join the reduced
   set; the reduced operators are rebuilt;
d. the reduced state restarts from the high-fidelity one (:math:`q = \Psi^\top M u`,
   internal variables read at the reduced points).

Two additions to the paper's loop, both switchable, both counted in the online time:
the *thermo-elastic enrichment* (:func:`thermoelastic_snapshots`, :meth:`AdaptiveROM.enrich`)
adds, before the run, the linear responses of the new temperature field, which the
plastic-strain indicator cannot ask for (it is 0 in elastic steps, where the training
basis misses the new thermal expansion by ~16 % on the academic plate); the *tangent
snapshots* give each HF step the direction of the steps that follow it, which cuts the
error between HF steps by about 5x on the plate.

Why replay instead of carrying the internal variables at all points: carrying them
costs one constitutive update at every point at every step, :math:`O(N)` per step,
which would make the online cost grow with the mesh. The replay costs the same per
replayed step (one strain evaluation and one constitutive update at all points, no
assembly, no solve: about 1/15 of a high-fidelity step of ~5 Newton iterations on the
academic plate) but only for the steps since the last synchronisation, and only when a
high-fidelity step is due; the state is then exactly the one the reduced trajectory
implies (the same update the reduced model ran at its own points). Full fields for
output are rebuilt the same way afterwards (:meth:`AdaptiveROM.reconstruct`),
outside the online timing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from .distributed import DofSpace, PartitionedHFModel, PointSpace
from .ecm import ECMResult, StressCubature
from .fem import HFState
from .gappy import GappyPOD, qdeim
from .pod import orthonormalize, pod, pod_update
from .reduced import ReducedModel, ReducedState, mode_strains

__all__ = ["Tolerances", "Snapshots", "StepRecord", "ROMRun", "OnlineState", "AdaptiveROM", "monitor_points",
           "thermoelastic_snapshots", "distinct_temperature_times", "tangent_response"]


@dataclass(frozen=True)
class Tolerances:
    r"""Tolerances of the adaptive ROM.

    Attributes
    ----------
    pod : float
        Relative Frobenius projection error of the displacement POD.
    ecm : float
        Relative residual of the ECM.
    gappy : float
        Relative Frobenius projection error of the POD of :math:`p`.
    indicator : float
        An HF step is taken when the indicator exceeds it.
    p_floor : float
        :math:`\|\hat p\|_\infty` at or below which a step counts as elastic (indicator 0).
    max_modes : int, optional
        Cap on the displacement modes.
    """

    pod: float = 1e-6
    ecm: float = 1e-5
    gappy: float = 1e-6
    indicator: float = 0.05
    p_floor: float = 1e-12
    max_modes: int | None = None


@dataclass
class Snapshots:
    """High-fidelity snapshots: ``u (n_dof, m)`` replicated (free part, fixed dofs 0),
    ``sigma (n_local, 6, m)`` and ``p (n_local, m)`` at the owned points."""

    u: np.ndarray
    sigma: np.ndarray
    p: np.ndarray

    @property
    def n_snapshots(self) -> int:
        return self.u.shape[1]


@dataclass
class StepRecord:
    """One online step.

    ``q_pred``/``basis_pred``: the reduced prediction (displacement basis id), whose
    indicator is ``indicator``; ``q``/``basis``: the accepted state (the projection
    of the HF solution after an HF step). ``seconds``: CPU time (:func:`time.process_time`) of the
    parts of the step (``rom``, ``replay``, ``hf``, ``update``).
    """

    step: int
    t: float
    load_factor: np.ndarray
    indicator: float
    hf: bool
    q_pred: np.ndarray
    basis_pred: int
    q: np.ndarray
    basis: int
    p_coefficients: np.ndarray
    p_basis: int
    newton_iterations: int
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ROMRun:
    """An online run: records, the high-fidelity states of its HF steps, the bases used, and
    the final reduced state."""

    records: list[StepRecord]
    hf_states: dict[int, HFState]
    bases: list[np.ndarray]
    p_bases: list[np.ndarray]
    final: ReducedState

    @property
    def hf_steps(self) -> list[int]:
        return [r.step for r in self.records if r.hf]

    def seconds(self, part: str | None = None) -> float:
        """Online CPU time (this rank), of one part or of all."""
        return float(sum(v for r in self.records for k, v in r.seconds.items() if part is None or k == part))


@dataclass
class OnlineState:
    """Where an online run (:meth:`AdaptiveROM.run`) stands before step ``step``: the last
    synchronised full state ``sync``, the reduced steps ``pending`` since (``(t, load_factor, q,
    basis id)``), the reduced state, the records and HF states so far. With the ROM's
    :meth:`AdaptiveROM.state_dict` it is all a resumed run needs (this rank's part)."""

    step: int
    sync: HFState
    pending: list[tuple[float, np.ndarray, np.ndarray, int]]
    rstate: ReducedState
    records: list[StepRecord]
    hf_states: dict[int, HFState]


def monitor_points(hf: PartitionedHFModel, times: Sequence[float], n_points: int) -> np.ndarray:
    r"""Weight-0 sampling points chosen from a loading before it is run.

    The temperature field of the loading is known in advance. Each temperature-dependent
    coefficient :math:`c` of the material, evaluated on it at every step, gives a field
    :math:`c(T(x, t_k))/c(T_\mathrm{ref}) - 1` (zero where the loading leaves the
    material as at the reference temperature); the QDEIM points of the POD of these
    fields (:math:`L^2` product) sit where the new loading softens or weakens the
    material, where plasticity the training run never saw can start. Returns global
    point indices, ``(<= n_points,)``.
    """
    if n_points <= 0:
        return np.zeros(0, np.int64)
    mat = hf.material
    T_ref = np.array([mat.t_ref])
    columns = []
    for f in fields(mat):
        coef = getattr(mat, f.name)
        if not callable(coef):
            continue
        ref = float(np.asarray(coef(T_ref)).reshape(-1)[0])
        for t in times:
            T = hf.temperature_at(float(t))
            columns.append(np.asarray(coef(T), dtype=np.float64) / (ref if ref != 0.0 else 1.0) - 1.0)
    if not columns:
        return np.zeros(0, np.int64)
    basis = pod(np.column_stack(columns), PointSpace(hf.partition), tol=0.0, max_modes=n_points)
    return qdeim(basis.modes, hf.partition, n_points)


def thermoelastic_snapshots(hf: PartitionedHFModel, times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r"""Linear thermo-elastic responses of the loading of ``hf`` at ``times``, known before it is run.

    At each time :math:`t`, with the elasticity :math:`\mathbb C(T(t))` of the virgin
    material: the response to the mechanical load of each load group at unit load factor
    (imposed displacements, body forces, surface loads) without thermal strain, and the
    response to the thermal strain with no mechanical load (one linearisation, ``G + 1``
    solves). Returns ``u (n_dof, (G + 1) k)`` and ``sigma (n_local, 6, (G + 1) k)``,
    ``G`` the number of load groups. The adaptive ROM adds them to its bases before the
    online run (:meth:`AdaptiveROM.enrich`): they carry what the training loading
    cannot, the elastic response of the new temperature field and of the softened
    material, which the plastic-strain indicator does not see in elastic steps.
    """
    disc, mat = hf.disc, hf.material
    free, fixed = hf.free_dofs, hf.fixed_dofs
    us, sigmas = [], []
    for t in times:
        T = hf.temperature_at(float(t))
        C = mat.elastic_tangent(T)
        op = hf.linearise(C)
        eps_th = mat.thermal_strain(T)
        f_th = hf.internal_forces(np.einsum("qij,qj->qi", C, eps_th))
        G = hf.n_factors
        sol = op.solve(np.column_stack([hf.external[free] - op.coupling(hf.fixed_values), f_th[free]]))
        u_all = np.zeros((disc.n_dof, G + 1))
        u_all[fixed, :G] = hf.fixed_values
        u_all[free] = sol
        for u, th in zip(u_all.T, [0.0] * G + [1.0]):
            us.append(u)
            sigmas.append(np.einsum("qij,qj->qi", C, hf.strain(u) - th * eps_th))
    return np.column_stack(us), np.stack(sigmas, axis=2)


def tangent_response(hf: PartitionedHFModel, previous: HFState, state: HFState) -> np.ndarray:
    r""":math:`\delta u = \partial u / \partial\lambda_g` at a converged HF step ``previous -> state``, one
    column per load group ``g``: :math:`K_{ff}\,\delta u_f = f^\mathrm{ext}_{f,g} - K_{fd}\,\ell_{d,g}`,
    :math:`\delta u_d = \ell_{d,g}`, with the consistent tangent of the converged state (one
    linearisation, ``G`` solves); ``(n_dof, G)``. They span the directions the next steps take under
    continued loading, which one snapshot alone does not give."""
    dt = state.t - previous.t
    _, _, C = hf.material.update(hf.strain(state.u), previous.material, hf.temperature_at(state.t), dt)
    op = hf.linearise(C)
    free, fixed = hf.free_dofs, hf.fixed_dofs
    du = np.zeros((hf.disc.n_dof, hf.n_factors))
    du[fixed] = hf.fixed_values
    du[free] = op.solve(hf.external[free] - op.coupling(hf.fixed_values)).reshape(free.size, -1)
    return du


def distinct_temperature_times(hf: PartitionedHFModel, times: Sequence[float], n: int) -> list[float]:
    """``n`` times spread evenly over the steps of ``times`` whose temperature fields differ
    (by more than 1e-9 relative), the last distinct one included."""
    comm = hf.partition.comm
    distinct, last = [], None
    for t in times:
        T = hf.temperature_at(float(t))
        change = comm.allreduce_max(float(np.max(np.abs(T - last), initial=0.0))) if last is not None else np.inf
        if change > 1e-9 * comm.allreduce_max(float(np.max(np.abs(T), initial=0.0))):
            distinct.append(float(t))
            last = T
    if n <= 0 or not distinct:
        return []
    idx = np.unique(np.round(np.linspace(len(distinct) - 1, 0, min(n, len(distinct)))[::-1]).astype(int))
    return [distinct[i] for i in idx]


def _homogeneous(u: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    out = np.array(u, dtype=np.float64, copy=True)
    out[fixed] = 0.0
    return out


class AdaptiveROM:
    """Offline reduction from snapshots, and the adaptive online loop (see the module docstring).

    Parameters
    ----------
    hf : PartitionedHFModel
        The high-fidelity model of the loading to run online (its temperature field
        is used by the reduced model; its HF steps feed the adaptation).
    snapshots : Snapshots
        Training snapshots (of another loading on the same mesh and boundary conditions).
    tol : Tolerances
    monitor : ndarray, optional
        Global indices of weight-0 monitor points (:func:`monitor_points`).
    ecm_batch : int
        Points per correlation pass of the ECM (:func:`~sciml.solvers.rom.ecm.ecm`).
    tangent_snapshots : bool
        Add the tangent response of each HF step to the displacement basis.

    Attributes
    ----------
    basis, p_basis : PODBasis
    ecm_directions : ndarray, shape ``(n_dof, n_E)``
        :math:`M`-orthonormal directions whose strains the ECM integrates; their span holds
        every basis so far.
    cubature : StressCubature
        The ECM, updated in place.
    ecm_result : ECMResult
    qdeim_points : ndarray
    model : ReducedModel
    gappy : GappyPOD
    build_seconds : dict
        CPU time of the offline parts (``pod``, ``ecm``, ``gappy``, ``operators``).
    """

    def __init__(self, hf: PartitionedHFModel, snapshots: Snapshots, tol: Tolerances,
                 monitor: np.ndarray | None = None, ecm_batch: int = 1, tangent_snapshots: bool = False) -> None:
        self.hf, self.partition, self.tol, self.ecm_batch = hf, hf.partition, tol, int(ecm_batch)
        self.tangent_snapshots = bool(tangent_snapshots)
        self.uspace, self.pspace = DofSpace(self.partition), PointSpace(self.partition)
        self.lift = np.zeros((hf.disc.n_dof, hf.n_factors))
        self.lift[hf.fixed_dofs] = hf.fixed_values
        u = _homogeneous(snapshots.u, hf.fixed_dofs)
        self.monitor = np.zeros(0, np.int64) if monitor is None else np.asarray(monitor, dtype=np.int64)
        self.build_seconds: dict[str, float] = {}
        t0 = time.process_time()
        self.basis = pod(u, self.uspace, tol.pod, tol.max_modes)
        t1 = time.process_time()
        self.ecm_directions = self.basis.modes
        self.cubature = StressCubature(snapshots.sigma, mode_strains(self.partition, self.basis.modes,
                                                                     self.partition.points),
                                       self.partition, tol.ecm, batch=self.ecm_batch)
        t2 = time.process_time()
        self.p_basis = pod(snapshots.p, self.pspace, tol.gappy)
        self.qdeim_points = qdeim(self.p_basis.modes, self.partition)
        t3 = time.process_time()
        self._assemble()
        t4 = time.process_time()
        self.build_seconds = {"pod": t1 - t0, "ecm": t2 - t1, "gappy": t3 - t2, "operators": t4 - t3}
        self.bases, self.p_bases = [self.basis.modes], [self.p_basis.modes]
        self.revision = 0

    @property
    def ecm_result(self) -> ECMResult:
        """The current reduced quadrature."""
        return self.cubature.result

    _STATE = ("tol", "ecm_batch", "tangent_snapshots", "lift", "monitor", "build_seconds", "basis", "p_basis",
              "ecm_directions", "qdeim_points", "bases", "p_bases", "revision")

    def state_dict(self) -> dict:
        """This rank's adaptive state (bases and their history, ECM, QDEIM and monitor points), without
        the HF model: :meth:`from_state_dict` continues from it bit-for-bit. It changes only where
        :attr:`revision` (0 after the build, one more per :meth:`add_monitor_points`, :meth:`update`
        and :meth:`enrich`) does, so a checkpoint needs to write it only then."""
        return {**{k: getattr(self, k) for k in self._STATE}, "cubature": self.cubature.state_dict()}

    @classmethod
    def from_state_dict(cls, hf: PartitionedHFModel, state: dict) -> "AdaptiveROM":
        """The ROM of :meth:`state_dict` on ``hf`` (the same model and partition); operators rebuilt."""
        rom = cls.__new__(cls)
        rom.hf, rom.partition = hf, hf.partition
        rom.uspace, rom.pspace = DofSpace(rom.partition), PointSpace(rom.partition)
        for k in cls._STATE:
            setattr(rom, k, state[k])
        if np.ndim(rom.lift) != 2 or rom.lift.shape[1] != hf.n_factors:
            raise ValueError(f"AdaptiveROM.from_state_dict: a lift of shape {np.shape(rom.lift)}, the model has "
                             f"{hf.n_factors} load group(s) (a state of an older version, or of another case)")
        rom.cubature = StressCubature.from_state_dict(state["cubature"], rom.partition)
        rom._assemble()
        return rom

    # -- building blocks -----------------------------------------------------------------------------
    def _new_directions(self) -> np.ndarray:
        r"""The part of the current basis outside the span of the ECM directions :math:`E`, as
        :math:`M`-orthonormal columns ``(n_dof, j)`` (those of squared norm above 1e-12)."""
        E, Psi, space = self.ecm_directions, self.basis.modes, self.uspace
        D = Psi - space.lincomb(E, space.gram(E, Psi))
        D = D - space.lincomb(E, space.gram(E, D))
        lam, V = np.linalg.eigh(0.5 * (space.gram(D, D) + space.gram(D, D).T))
        keep = lam > 1e-12
        if not np.any(keep):
            return np.zeros((E.shape[0], 0))
        J = space.lincomb(D, V[:, keep] / np.sqrt(lam[keep]))
        return orthonormalize(J - space.lincomb(E, space.gram(E, J)), space)

    def _assemble(self) -> None:
        """Reduced points = ECM points (their weights) + QDEIM and monitor points (weight 0)."""
        e = self.ecm_result
        points = np.unique(np.concatenate([e.points, self.qdeim_points, self.monitor]))
        weights = np.zeros(points.size)
        weights[np.searchsorted(points, e.points)] = e.weights
        self.model = ReducedModel(self.partition, self.hf.material, self.hf.model.temperature, self.basis.modes,
                                  self.lift, points, weights, external=self.hf.external)
        self.gappy = GappyPOD(self.partition.gather_selected(self.p_basis.modes, points), self.tol.p_floor)

    def add_monitor_points(self, points: np.ndarray) -> None:
        """Weight-0 monitor points (global indices) join the reduced set; operators rebuilt."""
        self.monitor = np.unique(np.concatenate([self.monitor, np.asarray(points, dtype=np.int64)]))
        self._assemble()
        self.revision += 1

    @property
    def n_modes(self) -> int:
        return self.basis.n_modes

    def update(self, state: HFState, previous: HFState | None = None) -> None:
        """Enrich with one HF state: incremental POD of u and p, ECM warm-started, operators rebuilt.

        With ``previous`` (the state the HF step started from) and ``tangent_snapshots``, the
        consistent-tangent response of the converged state to a unit increment of the
        imposed displacements joins the displacement basis too (:func:`tangent_response`).
        """
        tol = self.tol
        u = _homogeneous(state.u, self.hf.fixed_dofs)
        W = u[:, None]
        if self.tangent_snapshots and previous is not None:
            W = np.column_stack([u, _homogeneous(tangent_response(self.hf, previous, state), self.hf.fixed_dofs)])
        self.basis = pod_update(self.basis, W, self.uspace, tol.pod, tol.max_modes)
        self.p_basis = pod_update(self.p_basis, state.p, self.pspace, tol.gappy)
        self._refresh(state.sigma[:, :, None], new_qdeim=True)

    def enrich(self, u: np.ndarray, sigma: np.ndarray) -> None:
        """Add elastic snapshots (no plastic strain): ``u (n_dof, k)``, ``sigma (n_local, 6, k)``;
        displacement basis by incremental POD, ECM updated, operators rebuilt."""
        u = _homogeneous(u, self.hf.fixed_dofs)
        self.basis = pod_update(self.basis, u, self.uspace, self.tol.pod, self.tol.max_modes)
        self._refresh(sigma, new_qdeim=False)

    def _refresh(self, sigma: np.ndarray, new_qdeim: bool) -> None:
        """ECM update with the stress snapshots ``sigma (n_local, 6, k)`` and the new directions of the
        basis (:class:`~sciml.solvers.rom.ecm.StressCubature`), QDEIM points, operators."""
        J = self._new_directions()
        self.ecm_directions = np.hstack([self.ecm_directions, J])
        self.cubature.update(sigma, mode_strains(self.partition, J, self.partition.points))
        if new_qdeim:
            self.qdeim_points = np.unique(qdeim(self.p_basis.modes, self.partition, initial=self.qdeim_points))
        self._assemble()
        self.bases.append(self.basis.modes)
        self.p_bases.append(self.p_basis.modes)
        self.revision += 1

    def reduced_state(self, state: HFState, load_factor: float | np.ndarray) -> ReducedState:
        r"""The reduced state closest to an HF state at ``load_factor``:
        :math:`q = \Psi^\top M (u - \ell\lambda)`, internal variables read at the owned reduced points."""
        u = _homogeneous(state.u, self.hf.fixed_dofs)
        q = self.uspace.gram(self.basis.modes, u[:, None])[:, 0]
        idx = self.partition.local_index(self.model.local_points)
        mat = type(state.material)(state.material.eps_p[idx], state.material.p[idx])
        return ReducedState(state.t, self.hf.load_vector(load_factor), q, mat, state.sigma[idx])

    def replay(self, state: HFState, steps: Sequence[tuple[float, np.ndarray, np.ndarray, np.ndarray]]) -> HFState:
        r"""Full state after ``steps`` ``(t, load_factor, q, modes)`` of a reduced trajectory from ``state``:
        :math:`u = \ell\lambda + \Psi q` and the constitutive update at every owned point."""
        hf = self.hf
        for t, lam, q, modes in steps:
            u = self.lift @ hf.load_vector(lam) + modes @ q
            sigma, mat, _ = hf.material.update(hf.strain(u), state.material, hf.temperature_at(t), t - state.t)
            state = HFState(t, u, mat, sigma)
        return state

    # -- online ----------------------------------------------------------------------------------------
    def run(self, times: Sequence[float], load_factors: np.ndarray, adaptive: bool = True,
            log=None, start: OnlineState | None = None, on_step=None) -> ROMRun:
        """Run the reduced model over the steps ending at ``times`` from the virgin state at ``t = 0``,
        with ``load_factors`` ``(n_steps,)`` or, one per load group, ``(n_steps, G)``.

        With ``adaptive=False`` the indicator is computed but never acted on (the plain
        POD-ECM ROM). ``log(message)`` is told about each HF step. ``on_step(state)`` gets the
        :class:`OnlineState` after each step (to checkpoint it with :meth:`state_dict`);
        ``start``, such a state, continues a run from it (this ROM in the state it had then).
        """
        times = np.asarray(times, dtype=np.float64)
        load_factors = np.asarray(load_factors, dtype=np.float64)
        if times.ndim != 1 or load_factors.ndim not in (1, 2) or load_factors.shape[0] != times.size:
            raise ValueError(f"run: expected times (n_steps,) and load_factors (n_steps,) or (n_steps, G), got "
                             f"{times.shape} and {load_factors.shape}")
        load_factors = np.stack([self.hf.load_vector(lam) for lam in load_factors])
        if start is None:
            start = OnlineState(0, self.hf.initial_state(0.0), [], self.model.initial_state(), [], {})
        k0, sync, pending, rstate = start.step, start.sync, list(start.pending), start.rstate
        records, hf_states = list(start.records), dict(start.hf_states)
        for k, (t, lam) in enumerate(zip(times.tolist(), load_factors)):
            if k < k0:
                continue
            t0 = time.process_time()
            new, its = self.model.solve_step(rstate, t, lam)
            p_hat = self.model.sampled(new.material.p)
            E = self.gappy.indicator(p_hat)
            gamma = self.gappy.coefficients(p_hat)
            bid, pid = len(self.bases) - 1, len(self.p_bases) - 1
            rec = StepRecord(k, t, lam, E, False, new.q, bid, new.q, bid, gamma, pid, its,
                             {"rom": time.process_time() - t0})
            if adaptive and E > self.tol.indicator:
                t1 = time.process_time()
                full = self.replay(sync, [(tp, lp, qp, self.bases[b]) for tp, lp, qp, b in pending])
                t2 = time.process_time()
                hf_state = self.hf.solve_step(full, t, lam).state
                t3 = time.process_time()
                self.update(hf_state, full)
                rstate = self.reduced_state(hf_state, lam)
                t4 = time.process_time()
                sync, pending = hf_state, []
                hf_states[k] = hf_state
                rec.hf, rec.q, rec.basis = True, rstate.q, len(self.bases) - 1
                rec.p_coefficients, rec.p_basis = np.zeros(0), len(self.p_bases) - 1
                rec.seconds.update(replay=t2 - t1, hf=t3 - t2, update=t4 - t3)
                if log is not None:
                    log(f"step {k + 1}: indicator {E:.3g} > {self.tol.indicator:g}: HF step; now {self.n_modes} "
                        f"modes, {self.ecm_result.n_points} ECM points ({self.ecm_result.iterations} new tries), "
                        f"{self.model.n_points} reduced points")
            else:
                rstate = new
                pending.append((t, lam, new.q, bid))
            records.append(rec)
            if on_step is not None:
                on_step(OnlineState(k + 1, sync, list(pending), rstate, list(records), dict(hf_states)))
        return ROMRun(records, hf_states, list(self.bases), list(self.p_bases), rstate)

    def reconstruct(self, run: ROMRun) -> Iterator[HFState]:
        """Full states (owned points) of every step of ``run``: HF states where an HF step
        was taken, the replayed reduced trajectory elsewhere."""
        state = self.hf.initial_state(0.0)
        for rec in run.records:
            if rec.hf:
                state = run.hf_states[rec.step]
            else:
                state = self.replay(state, [(rec.t, rec.load_factor, rec.q, run.bases[rec.basis])])
            yield state

    def prediction(self, run: ROMRun, rec: StepRecord) -> np.ndarray:
        """Displacement ``(n_dof,)`` of the reduced prediction of a step (before any HF correction)."""
        return self.lift @ self.hf.load_vector(rec.load_factor) + run.bases[rec.basis_pred] @ rec.q_pred

    def p_reconstruction(self, run: ROMRun, rec: StepRecord, state: HFState) -> np.ndarray:
        r"""Gappy-POD estimate :math:`\Phi\gamma` of :math:`p` at the owned points (the HF ``p`` after an HF step)."""
        if rec.hf:
            return state.p
        return self.pspace.lincomb(run.p_bases[rec.p_basis], rec.p_coefficients[:, None])[:, 0]
