r"""The e3nn coefficient layout of a spherical-harmonic expansion, and its split by order.

A function on the sphere of degree at most :math:`L`,

.. math::

    f(\hat r) = \sum_{l=0}^{L} \sum_{m=-l}^{l} x_{lm} \, Y_{lm}(\hat r),

is stored as a tensor of shape ``(..., (L+1)**2)`` with :math:`x_{lm}` at index
``l*l + l + m``: the layout of e3nn's ``Irreps.spherical_harmonics(L)``.

The fast Gaunt paths transform each order :math:`|m|` separately (the azimuthal
factor of :math:`Y_{lm}` depends on :math:`m` only). They read the coefficients
*split by order*: rows indexed ``(|m|, s, l)``, ``L+1`` by 2 by ``L+1`` of them,
where ``s = 0`` holds :math:`x_{l,+|m|}` (the :math:`\cos |m|\varphi` harmonics)
and ``s = 1`` holds :math:`x_{l,-|m|}` (the :math:`\sin |m|\varphi` harmonics).
Rows with :math:`l < |m|`, or ``s = 1, m = 0``, hold no coefficient; the
per-order matrices that read them have zero columns there.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = [
    "TableModule",
    "as_degree",
    "as_count",
    "empty_product",
    "ignore_saved_constants",
    "num_coefficients",
    "degree_index",
    "check_coefficients",
    "order_gather_index",
    "order_empty_rows",
    "order_merge_index",
]


def num_coefficients(lmax: int) -> int:
    """Number of real spherical-harmonic coefficients of degree ``<= lmax``: ``(lmax+1)**2``."""
    return (lmax + 1) ** 2


def degree_index(lmax: int) -> Tensor:
    """Degree ``l`` of each entry of a ``(..., (lmax+1)**2)`` coefficient tensor, shape ``((lmax+1)**2,)``."""
    return torch.repeat_interleave(torch.arange(lmax + 1), 2 * torch.arange(lmax + 1) + 1)


def as_degree(value: Any, name: str) -> int:
    """``value`` as a degree (an integer >= 0; an integral float is accepted), else ``ValueError``."""
    return as_count(value, name, minimum=0)


def as_count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an integer >= ``minimum`` (an integral float is accepted), else ``ValueError``."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and int(value) == value and value >= minimum)
    if not ok:
        raise ValueError(f"expected {name} to be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_coefficients(x: Tensor, lmax: int, name: str, dtype: torch.dtype,
                       device: "torch.device | None" = None) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(..., (lmax+1)**2)`` tensor of ``dtype`` (on ``device``)."""
    n = num_coefficients(lmax)
    if not isinstance(x, Tensor):
        raise ValueError(f"expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(
            f"expected {name} of shape (..., {n}) (degrees <= {lmax}), got {tuple(x.shape)}"
        )
    if x.dtype != dtype:
        raise ValueError(
            f"expected {name} of dtype {dtype} (the module's; use .to(dtype) on the module), "
            f"got {x.dtype}"
        )
    if device is not None and x.device != device:
        raise ValueError(f"expected {name} on {device} (the module's; use .to(device) on the module), "
                         f"got {x.device}")


def order_gather_index(lmax: int) -> Tensor:
    """For each split row ``(m, s, l)`` (flattened), the index of its coefficient; 0 for empty rows.

    ``x[..., order_gather_index(L)]`` has shape ``(..., 2 (L+1)**2)``; the empty rows
    repeat :math:`x_{00}` and must meet zero weights.
    """
    index = torch.zeros(lmax + 1, 2, lmax + 1, dtype=torch.long)
    for m in range(lmax + 1):
        for l in range(m, lmax + 1):
            index[m, 0, l] = l * l + l + m
            if m > 0:
                index[m, 1, l] = l * l + l - m
    return index.flatten()


def order_empty_rows(lmax: int) -> Tensor:
    """The split rows ``(m, s, l)`` (flattened) that hold no coefficient: ``l < m``, and ``s = 1`` at ``m = 0``."""
    filled = torch.zeros(2 * (lmax + 1) ** 2, dtype=torch.bool)
    filled[order_merge_index(lmax)] = True
    return torch.nonzero(~filled).flatten()


def order_merge_index(lmax: int) -> Tensor:
    """For each coefficient ``l*l + l + m``, its split row ``(|m|, s, l)`` (flattened)."""
    index = torch.empty(num_coefficients(lmax), dtype=torch.long)
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            index[l * l + l + m] = (abs(m) * 2 + (m < 0)) * (lmax + 1) + l
    return index


class TableModule(torch.nn.Module):
    """A module whose constant floating-point tables stay exact under ``.to(dtype)``.

    A table is computed in float64 and registered with :meth:`register_table`: the buffer
    holds it in the default dtype (what the module computes in), and the float64 original
    is kept beside it. A cast of the module (``.double()``, ``.to(torch.float64)``,
    ``.half()``) rebuilds every table from the original, so a module built in float32 and
    cast to float64 has float64-exact tables, not float32 ones widened. Device moves keep
    the original on the CPU.
    """

    def register_table(self, name: str, table: Tensor) -> None:
        """Register ``table`` (computed in float64) as the non-persistent buffer ``name``."""
        if not hasattr(self, "_exact_tables"):
            self._exact_tables: dict[str, Tensor] = {}
        self._exact_tables[name] = table.detach().to(device="cpu", dtype=torch.float64)
        self.register_buffer(name, table.to(torch.get_default_dtype()), persistent=False)

    def _apply(self, fn, recurse: bool = True):
        tables = getattr(self, "_exact_tables", {})
        before = {name: self._buffers[name].dtype for name in tables if self._buffers.get(name) is not None}
        super()._apply(fn, recurse)
        for name, dtype in before.items():
            now = self._buffers.get(name)
            if now is not None and now.dtype != dtype:  # a cast: from the original (a move or share keeps it)
                self._buffers[name] = tables[name].to(device=now.device, dtype=now.dtype, copy=True)
        return self


def ignore_saved_constants(module: torch.nn.Module, names: "Sequence[str] | None" = None) -> None:
    """Make ``module.load_state_dict`` skip saved copies of constant buffers.

    The constant tables of the Gaunt paths are rebuilt by the constructor (and which
    tables exist depends on the transform chosen for the machine's thread count), so
    they are not saved (``persistent=False``). State dicts written before that, or by a
    module built with another transform, still hold them: this drops the keys ``names``
    (default: every key directly under the module, for modules without parameters).
    """
    module._register_load_state_dict_pre_hook(_DropSavedConstants(names), with_module=True)


class _DropSavedConstants:
    """The load-state-dict pre-hook of :func:`ignore_saved_constants` (an object, not a closure: a module
    holding it can be pickled, e.g. by ``torch.save(module)``)."""

    def __init__(self, names: "Sequence[str] | None") -> None:
        self.names = None if names is None else tuple(names)

    def __call__(self, mod, state_dict, prefix, *_args) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name = key[len(prefix):]
            if (self.names is None and "." not in name) or (self.names is not None and name in self.names):
                del state_dict[key]


def empty_product(xs: "Sequence[Tensor]", lmax_out: int) -> "Tensor | None":
    """The (empty) product of inputs whose broadcast batch has no element, else None.

    FFTs and reshapes of the fast paths cannot take an empty batch; the result is known
    without them. It stays attached to the inputs' graph (its gradients are empty too).
    """
    batch = torch.broadcast_shapes(*(x.shape[:-1] for x in xs))
    if math.prod(batch) != 0:
        return None
    anchor = sum(x.sum() for x in xs) * 0
    return anchor + torch.zeros(*batch, num_coefficients(lmax_out), dtype=xs[0].dtype, device=xs[0].device)
