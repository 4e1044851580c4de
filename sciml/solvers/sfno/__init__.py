r"""Spatiotemporal FNO with negative-Sobolev residual fine-tuning (Spectral-Refiner).

Cao, Brarda, Li, Xi, "Spectral-Refiner: Accurate Fine-Tuning of Spatiotemporal Neural
Operator for Turbulent Flows", ICLR 2025.

* :mod:`~sciml.solvers.sfno.layers`: :class:`SpectralConv3d` over (t, x, y) and
  :class:`TemporalSpectralConv`, both evaluated on output grids of any size;
* :mod:`~sciml.solvers.sfno.model`: :class:`SFNO`, vorticity ``(B, T_in, N, N)`` →
  trajectory ``(B, T_out, N, N)`` for any ``T_out`` and grid;
* :mod:`~sciml.solvers.sfno.finetune`: the enlarged output layer and its per-trajectory
  fine-tuning on the :math:`L^2(0,T;H^{-1})` norm of the Navier–Stokes residual;
* :mod:`~sciml.solvers.sfno.training`: relative :math:`L^2(0,T;L^2)` loss and a resumable
  :class:`Trainer`;
* :mod:`~sciml.solvers.sfno.baseline`: neuraloperator's FNO3d set up as the baseline.
"""

from .baseline import FNO3dBaseline, width_for_parameters
from .finetune import FineTuneResult, enlarged_output_layer, finetune, residual_norm
from .layers import SpectralConv3d, TemporalSpectralConv, max_mode
from .model import SFNO, full_output_modes, positional_features
from .training import Trainer, predict, relative_l2, relative_l2_loss, reuse_freed_memory

__all__ = [
    "SpectralConv3d",
    "TemporalSpectralConv",
    "max_mode",
    "SFNO",
    "positional_features",
    "full_output_modes",
    "enlarged_output_layer",
    "residual_norm",
    "finetune",
    "FineTuneResult",
    "Trainer",
    "predict",
    "relative_l2",
    "relative_l2_loss",
    "reuse_freed_memory",
    "FNO3dBaseline",
    "width_for_parameters",
]
