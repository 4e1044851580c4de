"""Building blocks shared by solvers and models (spectral calculus, Gaunt products).

Import from the modules: ``from sciml.operators.spectral import FourierGrid2D``.
"""
