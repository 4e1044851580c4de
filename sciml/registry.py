"""The one place where names written in a case file become Python objects.

Case kinds map to modules under :mod:`sciml.cases`; each such module defines

* ``Config`` — the pydantic schema of the kind (a :class:`sciml.config.Schema`), and
* ``run(config, run) -> dict`` — executes the case in a :class:`sciml.runs.Run`
  folder and returns its metrics.

Component names used inside schemas (time steppers, initial conditions, ...) map to
classes or factories here too, so an unknown name is rejected at validation with the
list of valid ones. Modules are imported lazily: validating a case imports its
schema module only.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["CASE_KINDS", "case_kinds", "case_module", "case_schema", "resolve", "names", "COMPONENTS"]

#: case kind -> module defining ``Config`` and ``run``
CASE_KINDS: dict[str, str] = {
    "navier_stokes": "sciml.cases.navier_stokes",
    "gp_pde": "sciml.cases.gp_pde",
    "nbody": "sciml.cases.nbody",
    "rom_adaptive": "sciml.cases.rom_adaptive",
    "sfno": "sciml.cases.sfno",
    "scot": "sciml.cases.scot",
}

#: component family -> {name in YAML -> "module:attribute"}
COMPONENTS: dict[str, dict[str, str]] = {
    "stepper": {
        "cn_euler": "sciml.solvers.navier_stokes:CNEuler",
        "heun_cn": "sciml.solvers.navier_stokes:HeunCN",
        "rk4_cn": "sciml.solvers.navier_stokes:RK4CN",
    },
}


def case_kinds() -> list[str]:
    """The registered case kinds, in registration order."""
    return list(CASE_KINDS)


def case_module(kind: str) -> ModuleType:
    """The module implementing ``kind``; KeyError names the valid kinds."""
    try:
        return importlib.import_module(CASE_KINDS[kind])
    except KeyError:
        raise KeyError(f"unknown case kind {kind!r}; valid: {', '.join(CASE_KINDS)}") from None


def case_schema(kind: str) -> Any:
    """The pydantic schema class of ``kind``."""
    return case_module(kind).Config


def names(family: str) -> tuple[str, ...]:
    """Valid YAML names of a component family (for ``Literal`` fields in schemas)."""
    return tuple(COMPONENTS[family])


def resolve(family: str, name: str) -> Any:
    """The class or factory registered as ``name`` in ``family``."""
    try:
        target = COMPONENTS[family][name]
    except KeyError:
        valid = ", ".join(COMPONENTS.get(family, {})) or "(none)"
        raise KeyError(f"unknown {family} {name!r}; valid: {valid}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
