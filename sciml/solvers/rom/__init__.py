r"""Error-indicator adaptive POD-ROM for nonlinear structural mechanics (Casenave & Akkari, 2019).

High-fidelity part:

* :mod:`~sciml.solvers.rom.material`: J2 elasto-viscoplasticity with Norton flow and
  temperature-dependent coefficients (Mandel notation, backward-Euler radial return,
  consistent tangent);
* :mod:`~sciml.solvers.rom.temperature`: temperature fields of a loading (hot spot, expression
  in ``x, y, z, t``, nodal table from a file);
* :mod:`~sciml.solvers.rom.fem`: Q4 plane-strain and hex8 kinematics with per
  integration point B matrices and weights, assembly on element subsets, and the
  Newton solver of the quasi-static problem with imposed displacements, body forces
  (centrifugal) and pressures on boundary faces; the academic plate and the rotating blade
  (:func:`~sciml.solvers.rom.academic_blade`, mesh from :mod:`sciml.meshes.blade`).

Reduced-order part (MPI-ready: rank-independent results, see :mod:`~sciml.solvers.rom.distributed`):

* :mod:`~sciml.solvers.rom.pod`: POD (method of snapshots) and incremental POD over an
  abstract inner-product :class:`~sciml.solvers.rom.pod.Space`;
* :mod:`~sciml.solvers.rom.ecm`: empirical cubature by non-negative OMP, and its incremental
  update (:class:`~sciml.solvers.rom.ecm.StressCubature`);
* :mod:`~sciml.solvers.rom.gappy`: QDEIM points, Gappy-POD and the error indicator;
* :mod:`~sciml.solvers.rom.reduced`: the hyper-reduced model and its Newton solver;
* :mod:`~sciml.solvers.rom.adaptive`: offline build and the indicator-driven adaptive loop;
* :mod:`~sciml.solvers.rom.distributed`: element blocks, ordered reductions, the
  partitioned high-fidelity model;
* :mod:`~sciml.solvers.rom.krylov`: its linear solvers, redundant SuperLU or block-Jacobi
  CG on the row-distributed tangent.
"""

from .temperature import ExpressionTemperature, NodalTemperature, hot_spot, read_temperature_table
from .fem import (Dirichlet, Discretisation, HFModel, HFState, History, StepResult, academic_blade, academic_plate,
                  centrifugal, load_cycle, load_history, run_history)
from .material import IDENTITY, P_DEV, MaterialState, ThermoViscoplasticJ2, mandel, mandel_to_tensor
from .pod import EuclideanSpace, PODBasis, Space, orthonormalize, pod, pod_update, truncation_rank
from .krylov import BlockJacobi, CGResult, CGSolver, DirectSolver, DistributedMatrix, RowBlocks, forcing_term, pcg
from .distributed import DofSpace, Linearisation, Partition, PartitionedHFModel, PointSpace
from .ecm import DenseIntegrand, ECMResult, Integrand, StressCubature, StressIntegrand, ecm
from .gappy import GappyPOD, qdeim
from .reduced import ReducedModel, ReducedState, mode_strains
from .adaptive import (AdaptiveROM, OnlineState, ROMRun, Snapshots, StepRecord, Tolerances,
                       distinct_temperature_times, monitor_points, tangent_response, thermoelastic_snapshots)

__all__ = [
    "ThermoViscoplasticJ2",
    "MaterialState",
    "mandel",
    "mandel_to_tensor",
    "IDENTITY",
    "P_DEV",
    "Discretisation",
    "Dirichlet",
    "HFModel",
    "HFState",
    "StepResult",
    "History",
    "run_history",
    "academic_plate",
    "academic_blade",
    "centrifugal",
    "load_cycle",
    "load_history",
    "hot_spot",
    "ExpressionTemperature",
    "NodalTemperature",
    "read_temperature_table",
    "Space",
    "EuclideanSpace",
    "PODBasis",
    "pod",
    "pod_update",
    "truncation_rank",
    "orthonormalize",
    "Partition",
    "DofSpace",
    "PointSpace",
    "PartitionedHFModel",
    "Linearisation",
    "DirectSolver",
    "CGSolver",
    "RowBlocks",
    "DistributedMatrix",
    "BlockJacobi",
    "CGResult",
    "pcg",
    "forcing_term",
    "Integrand",
    "StressIntegrand",
    "DenseIntegrand",
    "ECMResult",
    "ecm",
    "StressCubature",
    "GappyPOD",
    "qdeim",
    "ReducedModel",
    "ReducedState",
    "mode_strains",
    "AdaptiveROM",
    "ROMRun",
    "OnlineState",
    "Snapshots",
    "StepRecord",
    "Tolerances",
    "monitor_points",
    "thermoelastic_snapshots",
    "distinct_temperature_times",
    "tangent_response",
]
