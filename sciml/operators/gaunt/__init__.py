r"""Gaunt tensor products of spherical functions (e3nn real spherical-harmonic basis).

Luo, Chen, Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier
Basis via Gaunt Tensor Products", ICLR 2024.

Modules, one concept each:

* :mod:`.layout` -- the e3nn coefficient layout ``(..., (L+1)**2)`` and its split by order;
* :mod:`.harmonics` -- e3nn's real harmonics as polar × azimuthal factors, any degree;
* :mod:`.coefficients` -- exact Gaunt coefficients and the slow reference product;
* :mod:`.fourier` -- the paper's path: sparse SH -> 2D Fourier change of basis, FFT
  convolution, exact projection; :math:`\nu`-fold products in the Fourier domain;
* :mod:`.sphere_grid` -- Gauss–Legendre × uniform-:math:`\varphi` quadrature path;
* :mod:`.product` -- :class:`GauntTensorProduct` (picks the path) and the learnable
  :class:`WeightedGauntTensorProduct`;
* :mod:`.channelwise` -- channel-wise products of features ``(..., C, (L+1)**2)``:
  :class:`GauntChannelProduct` and, over the same irreps, e3nn's
  :class:`CGChannelProduct`;
* :mod:`.blocks` -- equivariant blocks (linear, gate, feature interaction,
  convolution, many-body interaction), Gaunt or CG.
"""

from .blocks import EquivariantConvolution, EquivariantLinear, FeatureInteraction, Gate, ManyBodyInteraction
from .channelwise import (
    GAUNT_METHODS,
    PRODUCTS,
    CGChannelProduct,
    GauntChannelProduct,
    channel_product,
    from_irreps_layout,
    gaunt_output_variance,
    sh_irreps,
    to_irreps_layout,
)
from .coefficients import gaunt_coefficients, gaunt_product_reference, wigner_3j_zero_m
from .fourier import (
    FourierGauntProduct,
    legendre_fourier_coefficients,
    legendre_projection_coefficients,
)
from .harmonics import azimuthal_basis, normalized_legendre
from .layout import num_coefficients
from .product import METHODS, GauntTensorProduct, WeightedGauntTensorProduct
from .sphere_grid import DENSE_MAX_DEGREE, SphereGridGauntProduct, dense_max_degree

__all__ = [
    "GauntTensorProduct",
    "WeightedGauntTensorProduct",
    "METHODS",
    "FourierGauntProduct",
    "SphereGridGauntProduct",
    "DENSE_MAX_DEGREE",
    "dense_max_degree",
    "gaunt_coefficients",
    "gaunt_product_reference",
    "wigner_3j_zero_m",
    "legendre_fourier_coefficients",
    "legendre_projection_coefficients",
    "normalized_legendre",
    "azimuthal_basis",
    "num_coefficients",
    "PRODUCTS",
    "GAUNT_METHODS",
    "GauntChannelProduct",
    "CGChannelProduct",
    "channel_product",
    "gaunt_output_variance",
    "sh_irreps",
    "to_irreps_layout",
    "from_irreps_layout",
    "EquivariantLinear",
    "Gate",
    "FeatureInteraction",
    "EquivariantConvolution",
    "ManyBodyInteraction",
]
