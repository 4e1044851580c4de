r"""Error-indicator adaptive POD-ROM for nonlinear structural mechanics (Casenave & Akkari, 2019).

High-fidelity part:

* :mod:`~sciml.solvers.rom.material`: J2 elasto-viscoplasticity with Norton flow and
  temperature-dependent coefficients (Mandel notation, backward-Euler radial return,
  consistent tangent);
* :mod:`~sciml.solvers.rom.fem`: Q4 plane-strain and hex8 kinematics with per
  integration point B matrices and weights, assembly on element subsets, and the
  Newton solver of the quasi-static problem with imposed displacements.
"""

from .fem import Dirichlet, Discretisation, HFModel, HFState, History, StepResult, academic_plate, run_history
from .material import IDENTITY, P_DEV, MaterialState, ThermoViscoplasticJ2, mandel, mandel_to_tensor

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
]
