r"""Learned equivariant particle simulator: the charged N-body task with Gaunt (or CG) products.

* :mod:`~sciml.solvers.nbody.data`: the EGNN/SEGNN charged-particle generator
  (Coulomb forces with clipping, EGNN's kick-drift integrator, per-trajectory seeds),
  vectorised over systems;
* :mod:`~sciml.solvers.nbody.model`: :class:`NBodyNetwork`, a SEGNN-style network
  built from :mod:`sciml.operators.gaunt.blocks`, ``product="gaunt"`` or ``"cg"``;
* :mod:`~sciml.solvers.nbody.train`: training epoch, evaluation, and the
  constant-velocity and fitted-linear baselines.
"""

from .data import (
    ChargedSystem,
    NBodyData,
    coulomb_forces,
    generate,
    initial_conditions,
    potential_energy,
    simulate,
    total_energy,
)
from .model import NBodyNetwork, fully_connected_edges
from .train import (
    batch_indices,
    constant_velocity_mse,
    evaluate,
    fit_linear_time,
    linear_mse,
    mse,
    train_epoch,
)

__all__ = [
    "ChargedSystem",
    "NBodyData",
    "initial_conditions",
    "coulomb_forces",
    "potential_energy",
    "total_energy",
    "simulate",
    "generate",
    "NBodyNetwork",
    "fully_connected_edges",
    "mse",
    "batch_indices",
    "train_epoch",
    "evaluate",
    "constant_velocity_mse",
    "fit_linear_time",
    "linear_mse",
]
