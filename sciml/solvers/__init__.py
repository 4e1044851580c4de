"""Solvers, neural and classical. Usable from Python alone: build, call, get tensors.

Subpackages are imported on use (``from sciml.solvers.navier_stokes import RK4CN``)
so that importing one solver does not pull in the dependencies of the others.
"""

__all__ = ["count_parameters"]


def count_parameters(module) -> int:
    """Real numbers held by the parameters of a ``torch.nn.Module``: a complex parameter counts twice.

    ``Tensor.numel`` counts a complex entry once, so summing it over parameters makes a
    model with complex weights (neuraloperator's spectral convolutions store theirs as
    ``complex64``) look half its size next to one that stores the same weights as real
    pairs. Comparisons "at comparable parameters" use this count.

    Examples
    --------
    >>> import torch
    >>> layer = torch.nn.Linear(3, 2)
    >>> layer.register_parameter("z", torch.nn.Parameter(torch.zeros(4, dtype=torch.complex64)))
    >>> count_parameters(layer)
    16
    """
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters())
