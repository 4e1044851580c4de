"""Solvers, neural and classical. Usable from Python alone: build, call, get tensors.

Subpackages are imported on use (``from sciml.solvers.navier_stokes import RK4CN``)
so that importing one solver does not pull in the dependencies of the others.
"""
