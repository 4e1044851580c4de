r"""Charged-particle N-body data: the EGNN / SEGNN "charged" benchmark, generated here in torch.

Physics (Kipf et al., "Neural Relational Inference for Interacting Systems", ICML
2018, extended to 3D without walls by Satorras, Hoogeboom, Welling, "E(n) Equivariant
Graph Neural Networks", ICML 2021; used unchanged by Brandstetter et al., SEGNN, ICLR
2022, and by the Gaunt tensor product paper, Luo et al., ICLR 2024): :math:`n = 5`
particles of unit mass with charges :math:`q_i = \pm 1` in free 3D space,

.. math::

    \ddot x_i = F_i = k \sum_{j \ne i} q_i q_j \frac{x_i - x_j}{|x_i - x_j|^3},
    \qquad
    U = k \sum_{i<j} \frac{q_i q_j}{|x_i - x_j|},

(like charges repel), :math:`k` = ``strength`` = 1. Each Cartesian component of
:math:`F_i` is clipped to :math:`[-F_\text{max}, F_\text{max}]`,
:math:`F_\text{max} = 100` (EGNN's :math:`0.1/\Delta t` at its :math:`\Delta t = 10^{-3}`; a fixed
``max_force``, not rescaled with another ``dt``).

Parameters and their source (EGNN repository ``n_body_system/dataset``:
``synthetic_sim.py``, ``ChargedParticlesSim``, and ``generate_dataset.py``, the
``charged5_initvel1small`` set read by ``dataset_nbody.py``):

==========================  =======================================================
charges                     :math:`\pm 1`, probability 1/2 each (``charge_prob``)
initial positions           :math:`\mathcal N(0, \sigma^2)` per coordinate,
                            :math:`\sigma` = ``loc_std`` = 1 (times
                            :math:`(n/5)^{1/3}` = 1 for 5 particles)
initial velocities          isotropic direction, norm exactly ``vel_norm`` = 0.5
time step                   :math:`\Delta t` = 0.001
integrator                  kick-drift (leapfrog with velocities at half steps):
                            :math:`v \mathrel{+}= \Delta t\, F(x_0)` once, then per
                            step :math:`x \mathrel{+}= \Delta t\, v`,
                            :math:`v \mathrel{+}= \Delta t\, F(x)`
stored frames               every 100 steps; frame :math:`k` after step
                            :math:`100 (k+1)`, with the velocity that moved the
                            particles into it (:math:`v_{n-1/2}`)
task                        frame 30 (positions, velocities) -> positions at
                            frame 40: 1000 steps, :math:`\Delta T = 1.0` later
sizes                       3000 / 2000 / 2000 train / validation / test
==========================  =======================================================

(The brief's :math:`\mathcal N(0, 0.5^2)` positions are the *springs* simulation's
``loc_std``; the charged one uses 1. The first kick is a full :math:`\Delta t`, not
the half step of textbook leapfrog, as in the EGNN code; it perturbs the initial
velocity by :math:`\tfrac12 \Delta t F`, after which the scheme is leapfrog.)

What the clipping does: it caps the force when two particles come closer than about
:math:`0.1` (:math:`|F| \approx 1/r^2 > 100`). A clipped force is no longer the
gradient of :math:`U` and no longer obeys Newton's third law (the sum over
particles of clipped components need not vanish), so clipped steps break energy
*and* momentum conservation. Without clipping the scheme conserves total momentum
exactly (to round-off) and the energy, evaluated with the velocity
:math:`v_n = v_{n-1/2} + \tfrac12\Delta t F(x_n)` at integer steps, to
:math:`O(\Delta t^2)` without drift (symplectic). :func:`simulate` counts the
clipped steps of each trajectory.

Everything is vectorised over systems (the batch dimension) and reproducible per
trajectory: trajectory ``i`` draws its initial state from its own seed
(``sciml.parallel.sample_seed(case_seed, index)``), so it does not depend on how
many trajectories are generated together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "ChargedSystem",
    "NBodyData",
    "initial_conditions",
    "coulomb_forces",
    "potential_energy",
    "total_energy",
    "simulate",
    "generate",
]


@dataclass(frozen=True)
class ChargedSystem:
    """Physical and numerical parameters of the charged-particle system (EGNN defaults)."""

    n_particles: int = 5
    loc_std: float = 1.0
    vel_norm: float = 0.5
    strength: float = 1.0
    dt: float = 1e-3
    max_force: float | None = 100.0  #: per component; None disables clipping


@dataclass
class NBodyData:
    """Input/target pairs of the N-body task.

    Attributes
    ----------
    pos, vel : Tensor ``(n, N, 3)``
        Positions and velocities at the input frame.
    charge : Tensor ``(n, N)``
    target : Tensor ``(n, N, 3)``
        Positions at the target frame, ``horizon`` time units later.
    horizon : float
        Time between input and target frames (1.0 for the benchmark).
    clipped_steps : Tensor ``(n,)`` long
        Steps at which some force component of the trajectory was clipped (up to the
        target frame).
    """

    pos: Tensor
    vel: Tensor
    charge: Tensor
    target: Tensor
    horizon: float
    clipped_steps: Tensor

    def __len__(self) -> int:
        return self.pos.shape[0]

    def subset(self, index: Tensor | slice) -> "NBodyData":
        return NBodyData(self.pos[index], self.vel[index], self.charge[index], self.target[index], self.horizon,
                         self.clipped_steps[index])

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "NBodyData":
        def f(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return NBodyData(f(self.pos), f(self.vel), f(self.charge), f(self.target), self.horizon,
                         self.clipped_steps.to(device=device))


def initial_conditions(system: ChargedSystem, seeds: Sequence[int], dtype: torch.dtype = torch.float64,
                       device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Initial ``pos (B, N, 3)``, ``vel (B, N, 3)``, ``charge (B, N)`` of ``len(seeds)`` systems.

    System ``b`` uses only ``torch.Generator().manual_seed(seeds[b])``: charges
    :math:`\\pm 1` (probability 1/2), positions :math:`\\mathcal N(0, \\sigma^2)` with
    :math:`\\sigma` = ``loc_std`` :math:`(n/5)^{1/3}`,
    velocities of norm ``vel_norm`` in an isotropic random direction.
    """
    n = system.n_particles
    spread = system.loc_std * (n / 5) ** (1 / 3)  # EGNN's: the same density for any count (exactly 1x at n = 5)
    pos, vel, charge = [], [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        charge.append(torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2.0 - 1.0)
        pos.append(torch.randn(n, 3, generator=g, dtype=torch.float64) * spread)
        v = torch.randn(n, 3, generator=g, dtype=torch.float64)
        vel.append(v * (system.vel_norm / torch.linalg.vector_norm(v, dim=-1, keepdim=True)))
    out = (torch.stack(pos), torch.stack(vel), torch.stack(charge))
    return tuple(t.to(device=device, dtype=dtype) for t in out)  # type: ignore[return-value]


def _coupling(charge: Tensor, strength: float) -> Tensor:
    """:math:`k q_i q_j` for :math:`i \ne j`, zero on the diagonal, ``(B, N, N)``."""
    eye = torch.eye(charge.shape[1], dtype=charge.dtype, device=charge.device)
    return strength * charge[:, :, None] * charge[:, None, :] * (1.0 - eye)


def _forces(pos: Tensor, coupling: Tensor, max_force: float | None) -> tuple[Tensor, Tensor]:
    """Forces ``(B, N, 3)`` from positions and :func:`_coupling`; clipped-system flags ``(B,)`` long."""
    diff = pos[:, :, None, :] - pos[:, None, :, :]
    dist = torch.linalg.vector_norm(diff, dim=-1)
    dist = dist + torch.eye(pos.shape[1], dtype=pos.dtype, device=pos.device)  # no 0/0 on the diagonal
    force = torch.einsum("bij,bijk->bik", coupling / dist**3, diff)
    if max_force is None:
        return force, torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    return force.clamp(-max_force, max_force), (force.abs() > max_force).flatten(1).any(1).long()


def coulomb_forces(pos: Tensor, charge: Tensor, strength: float = 1.0,
                   max_force: float | None = None) -> tuple[Tensor, Tensor]:
    r"""Forces :math:`F_i = k \sum_{j\ne i} q_i q_j (x_i - x_j)/|x_i - x_j|^3`, clipped per component.

    Parameters
    ----------
    pos : ``(B, N, 3)``; charge : ``(B, N)``.

    Returns
    -------
    force : ``(B, N, 3)``
    clipped : ``(B,)`` bool, whether any component of the system was clipped.
    """
    force, clipped = _forces(pos, _coupling(charge, strength), max_force)
    return force, clipped.bool()


def potential_energy(pos: Tensor, charge: Tensor, strength: float = 1.0) -> Tensor:
    r""":math:`U = k \sum_{i<j} q_i q_j / |x_i - x_j|`, shape ``(B,)``."""
    i, j = torch.triu_indices(pos.shape[1], pos.shape[1], offset=1, device=pos.device)
    dist = torch.linalg.vector_norm(pos[:, i] - pos[:, j], dim=-1)
    return strength * (charge[:, i] * charge[:, j] / dist).sum(1)


def total_energy(pos: Tensor, vel_half: Tensor, charge: Tensor, system: ChargedSystem) -> Tensor:
    r"""Energy at a stored frame, ``(B,)``: :math:`\tfrac12 \sum |v_n|^2 + U(x_n)`.

    ``vel_half`` is the stored velocity :math:`v_{n-1/2}`; the velocity at the step is
    :math:`v_n = v_{n-1/2} + \tfrac12 \Delta t\, F(x_n)` (unclipped force), which makes
    the leapfrog energy error :math:`O(\Delta t^2)`.
    """
    force, _ = coulomb_forces(pos, charge, system.strength)
    v = vel_half + 0.5 * system.dt * force
    return 0.5 * v.square().sum((1, 2)) + potential_energy(pos, charge, system.strength)


def simulate(system: ChargedSystem, pos: Tensor, vel: Tensor, charge: Tensor, n_frames: int,
             sample_every: int = 100) -> tuple[Tensor, Tensor, Tensor]:
    """Integrate ``n_frames * sample_every`` steps (EGNN's kick-drift scheme, see the module docstring).

    Parameters
    ----------
    pos, vel : ``(B, N, 3)``; charge : ``(B, N)``
        Initial state (not modified).

    Returns
    -------
    positions, velocities : ``(B, n_frames, N, 3)``
        Frame ``k`` after step ``sample_every * (k+1)``; velocities :math:`v_{n-1/2}`.
    clipped_steps : ``(B,)`` long
        Number of force evaluations with a clipped component, per system.
    """
    if int(n_frames) != n_frames or n_frames < 1 or int(sample_every) != sample_every or sample_every < 1:
        raise ValueError(f"expected n_frames >= 1 and sample_every >= 1, got {n_frames!r}, {sample_every!r}")
    coupling = _coupling(charge, system.strength)
    x, v = pos.clone(), vel.clone()
    f, clipped_steps = _forces(x, coupling, system.max_force)
    v = v + system.dt * f
    frames_x, frames_v = [], []
    n_steps = n_frames * sample_every
    for step in range(1, n_steps + 1):
        x = x + system.dt * v
        if step % sample_every == 0:
            frames_x.append(x)
            frames_v.append(v)
        if step < n_steps:
            f, clipped = _forces(x, coupling, system.max_force)
            clipped_steps = clipped_steps + clipped
            v = v + system.dt * f
    return torch.stack(frames_x, 1), torch.stack(frames_v, 1), clipped_steps


#: Bytes of one pairwise ``(B, N, N, 3)`` float64 array above which :func:`generate` integrates fewer
#: systems at a time than asked (the force evaluation holds a few such arrays).
CHUNK_BYTES = 256 * 2**20


def generate(system: ChargedSystem, seeds: Sequence[int], frame_in: int = 30, frame_out: int = 40,
             sample_every: int = 100, chunk_size: int = 4096,
             device: torch.device | str | None = None) -> NBodyData:
    """The N-body task for ``len(seeds)`` trajectories: state at ``frame_in`` -> positions at ``frame_out``.

    Simulates in float64, ``chunk_size`` systems at a time, fewer where the pairwise arrays
    of that many systems would exceed :data:`CHUNK_BYTES` (the result does not depend on it:
    systems do not interact and each has its own seed).

    Examples
    --------
    >>> d = generate(ChargedSystem(), seeds=[0, 1], frame_in=1, frame_out=2, sample_every=10)
    >>> d.pos.shape, d.target.shape, d.horizon
    (torch.Size([2, 5, 3]), torch.Size([2, 5, 3]), 0.01)
    """
    if not 0 <= frame_in < frame_out:
        raise ValueError(f"expected 0 <= frame_in < frame_out, got {frame_in}, {frame_out}")
    if len(seeds) == 0 or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"expected at least one seed and chunk_size >= 1, got {len(seeds)} seeds, "
                         f"chunk_size {chunk_size!r}")
    pair_bytes = 3 * 8 * system.n_particles**2  # one (N, N, 3) float64 array per system
    chunk_size = max(1, min(int(chunk_size), CHUNK_BYTES // pair_bytes))
    parts = []
    for start in range(0, len(seeds), chunk_size):
        pos, vel, charge = initial_conditions(system, seeds[start:start + chunk_size], device=device)
        xs, vs, clipped = simulate(system, pos, vel, charge, frame_out + 1, sample_every)
        parts.append((xs[:, frame_in], vs[:, frame_in], charge, xs[:, frame_out], clipped))
    cat = [torch.cat(p) for p in zip(*parts)]
    horizon = (frame_out - frame_in) * sample_every * system.dt
    return NBodyData(cat[0], cat[1], cat[2], cat[3], horizon, cat[4])
