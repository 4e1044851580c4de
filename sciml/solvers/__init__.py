"""Solvers, neural and classical. Usable from Python alone: build, call, get tensors."""
