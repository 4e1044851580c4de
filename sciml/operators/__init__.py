"""Building blocks shared by solvers and models (spectral calculus, Gaunt products)."""
