"""sciml: scientific machine learning for PDEs and equivariant models.

The package is layered; imports point down only::

    cli -> cases -> solvers -> operators, meshes -> parallel, runs, config
"""

__version__ = "0.1.0"
