r"""Small-strain thermo-elasto-viscoplasticity: J2 plasticity with Norton flow.

Notation (Mandel)
-----------------
Symmetric second-order tensors are 6-vectors in the orthonormal Mandel basis, order
``(11, 22, 33, 23, 13, 12)`` with the shear components multiplied by :math:`\sqrt2`:

.. math::

    \hat a = (a_{11}, a_{22}, a_{33}, \sqrt2 a_{23}, \sqrt2 a_{13}, \sqrt2 a_{12}).

Strains and stresses use the same map, so :math:`a : b = \hat a \cdot \hat b`, the
identity tensor is ``(1, 1, 1, 0, 0, 0)``, fourth-order tensors with minor symmetries
are 6x6 matrices, and the tangent of a hyperelastic-like (associated) update is a
*symmetric* matrix. :func:`mandel` and :func:`mandel_to_tensor` convert.

Constitutive law
----------------
Total form with temperature-dependent isotropic elasticity,

.. math::

    \sigma = \mathbb C(T) : (\varepsilon - \varepsilon^p - \alpha(T)(T - T_\mathrm{ref}) I),
    \qquad \mathbb C = 3\kappa \mathbb P_\mathrm{vol} + 2G \mathbb P_\mathrm{dev},

von Mises yield with linear isotropic hardening and Norton viscoplastic flow,

.. math::

    \dot p = \left\langle \frac{\sigma_\mathrm{eq} - \sigma_y(T) - H(T) p}{K(T)}\right\rangle^{n(T)},
    \qquad \dot\varepsilon^p = \dot p \, \tfrac32 \frac{s}{\sigma_\mathrm{eq}},
    \qquad \sigma_\mathrm{eq} = \sqrt{\tfrac32 s : s}.

Time integration is backward Euler with every coefficient at :math:`T_{n+1}`; the
stress is in total form, so the update needs no temperature of the previous step.
Radial return: with the elastic trial deviator :math:`s^\mathrm{tr}` and
:math:`q^\mathrm{tr} = \sigma_\mathrm{eq}(s^\mathrm{tr})`, the increment
:math:`\Delta p` solves the scalar equation (one per integration point, vectorised)

.. math::

    \ln\frac{\Delta p}{\Delta t} = n \ln\frac{f(\Delta p)}{K}, \qquad
    f(\Delta p) = q^\mathrm{tr} - (3G + H)\Delta p - \sigma_y - H p_n > 0,

where :math:`f^\mathrm{tr} = f(0) > 0` (else the step is elastic). In
:math:`y = \ln \Delta p` the residual is increasing and convex, so Newton started to the
right of the root converges monotonically (see :meth:`ThermoViscoplasticJ2.update`).
Then :math:`s = (1 - 3G\Delta p / q^\mathrm{tr}) s^\mathrm{tr}` and
:math:`\varepsilon^p_{n+1} = \varepsilon^p_n + \Delta p N`,
:math:`N = \tfrac32 s^\mathrm{tr}/q^\mathrm{tr}`. The consistent (algorithmic) tangent is

.. math::

    \frac{\partial\sigma}{\partial\varepsilon} = \mathbb C
    - 4G^2 \beta \, N \otimes N
    - \frac{6 G^2 \Delta p}{q^\mathrm{tr}} \left(\mathbb P_\mathrm{dev} - \tfrac23 N\otimes N\right),
    \qquad \beta = \frac{n\Delta p}{f + n\Delta p\,(3G + H)},

:math:`\beta = \partial\Delta p / \partial q^\mathrm{tr}` (it tends to :math:`1/(3G+H)`
in the rate-independent limit). See Simo & Hughes, *Computational Inelasticity*
(1998), ch. 3, for radial return and its consistent tangent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union, final

import numpy as np

__all__ = ["MaterialState", "ThermoViscoplasticJ2", "mandel", "mandel_to_tensor", "IDENTITY", "P_DEV"]

Coefficient = Union[float, Callable[[np.ndarray], np.ndarray]]
"""A material coefficient: a constant, or a vectorised function of temperature ``T (Q,) -> (Q,)``."""

_S2 = math.sqrt(2.0)
#: The identity tensor in Mandel form, shape ``(6,)``.
IDENTITY = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
#: The deviatoric projector :math:`\mathbb I - \tfrac13 I \otimes I` in Mandel form, shape ``(6, 6)``.
P_DEV = np.eye(6) - np.outer(IDENTITY, IDENTITY) / 3.0
_P_VOL = np.outer(IDENTITY, IDENTITY) / 3.0
_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_SCALE = np.array([1.0, 1.0, 1.0, _S2, _S2, _S2])


def _isotropic(kappa: np.ndarray, G: np.ndarray) -> np.ndarray:
    r""":math:`3\kappa \mathbb P_\mathrm{vol} + 2G \mathbb P_\mathrm{dev}`, shape ``(Q, 6, 6)``."""
    return 3.0 * kappa[:, None, None] * _P_VOL + 2.0 * G[:, None, None] * P_DEV


def mandel(tensor: np.ndarray) -> np.ndarray:
    """Symmetric tensors ``(..., 3, 3)`` to Mandel 6-vectors ``(..., 6)`` (order 11, 22, 33, 23, 13, 12)."""
    tensor = np.asarray(tensor)
    if tensor.shape[-2:] != (3, 3):
        raise ValueError(f"expected tensors of shape (..., 3, 3), got {tensor.shape}")
    return np.stack([tensor[..., i, j] for i, j in _PAIRS], axis=-1) * _SCALE


def mandel_to_tensor(vector: np.ndarray) -> np.ndarray:
    """Mandel 6-vectors ``(..., 6)`` to symmetric tensors ``(..., 3, 3)``."""
    vector = np.asarray(vector)
    if vector.shape[-1:] != (6,):
        raise ValueError(f"expected Mandel vectors of shape (..., 6), got {vector.shape}")
    comps = vector / _SCALE
    out = np.empty(vector.shape[:-1] + (3, 3), dtype=vector.dtype)
    for c, (i, j) in enumerate(_PAIRS):
        out[..., i, j] = comps[..., c]
        out[..., j, i] = comps[..., c]
    return out


@dataclass(frozen=True)
class MaterialState:
    """Internal variables at ``Q`` integration points.

    Attributes
    ----------
    eps_p : ndarray, shape ``(Q, 6)``
        Plastic strain, Mandel form (deviatoric: its first three entries sum to 0).
    p : ndarray, shape ``(Q,)``
        Cumulated (equivalent) plastic strain.
    """

    eps_p: np.ndarray
    p: np.ndarray

    @classmethod
    def zeros(cls, n_points: int) -> "MaterialState":
        """The virgin state at ``n_points`` points."""
        return cls(np.zeros((n_points, 6)), np.zeros(n_points))

    @property
    def n_points(self) -> int:
        return self.p.shape[0]


@final
@dataclass(frozen=True)
class ThermoViscoplasticJ2:
    """J2 elasto-viscoplasticity with Norton flow and temperature-dependent coefficients.

    Each coefficient is a float or a vectorised callable of the temperature
    ``T (Q,) -> (Q,)``. Units are the user's; the academic law
    (:meth:`academic`) uses MPa, mm, K, s.

    Parameters
    ----------
    young, poisson
        Young's modulus :math:`E(T)` and Poisson's ratio :math:`\\nu(T)`.
    alpha
        Secant thermal expansion coefficient :math:`\\alpha(T)`; the thermal strain is
        :math:`\\alpha(T)(T - T_\\mathrm{ref}) I`.
    sigma_y, hardening
        Initial yield stress :math:`\\sigma_y(T)` and linear hardening modulus :math:`H(T)`.
    norton_k, norton_n
        Norton drag stress :math:`K(T)` (stress x time^(1/n)) and exponent :math:`n(T) \\ge 1`.
    t_ref
        Temperature free of thermal strain.
    newton_tol, max_newton
        Convergence tolerance on the log-increment :math:`|\\delta \\ln\\Delta p|` of the
        scalar Newton per point and its iteration limit.

    Examples
    --------
    >>> law = ThermoViscoplasticJ2.academic()
    >>> state = MaterialState.zeros(2)
    >>> eps = np.array([[3e-3, 0, 0, 0, 0, 0], [1e-2, 0, 0, 0, 0, 0]])
    >>> sigma, new, tangent = law.update(eps, state, T=np.full(2, 293.0), dt=1.0)
    >>> bool(new.p[0] == 0.0), bool(new.p[1] > 0.0), tangent.shape
    (True, True, (2, 6, 6))
    """

    young: Coefficient
    poisson: Coefficient
    alpha: Coefficient
    sigma_y: Coefficient
    hardening: Coefficient
    norton_k: Coefficient
    norton_n: Coefficient
    t_ref: float = 293.0
    newton_tol: float = 1e-12
    max_newton: int = 100

    @classmethod
    def academic(cls) -> "ThermoViscoplasticJ2":
        """The academic plate law (MPa, mm, K, s), with :math:`\\theta = T - 293`:
        :math:`E = 200000 - 60\\theta`, :math:`\\nu = 0.3`, :math:`\\alpha = 1.3\\cdot10^{-5}`,
        :math:`\\sigma_y = 900 - 0.5\\theta`, :math:`H = 2000`,
        :math:`K = 2000 e^{-\\theta/250}`, :math:`n = 6 - 3\\theta/700`."""
        return cls(
            young=lambda T: 200000.0 - 60.0 * (T - 293.0),
            poisson=0.3,
            alpha=1.3e-5,
            sigma_y=lambda T: 900.0 - 0.5 * (T - 293.0),
            hardening=2000.0,
            norton_k=lambda T: 2000.0 * np.exp(-(T - 293.0) / 250.0),
            norton_n=lambda T: 6.0 - 3.0 * (T - 293.0) / 700.0,
            t_ref=293.0,
        )

    def inadmissible(self, T: np.ndarray) -> str | None:
        """What makes the law meaningless at some of the temperatures ``T`` (any shape): a temperature
        that is not finite, or outside the range where E > 0, -1 < nu < 1/2, sigma_y >= 0, H >= 0, K > 0
        and n >= 1 (the law's stated range; the return mapping gives NaN from n ~ 0.3 on); None if all
        is well."""
        T = np.asarray(T, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(T)):
            return f"a temperature that is not a finite number ({T[~np.isfinite(T)][0]})"
        checks = [("Young's modulus E", self.young, lambda v: v > 0, "> 0"),
                  ("Poisson's ratio nu", self.poisson, lambda v: (v > -1) & (v < 0.5), "in (-1, 0.5)"),
                  ("yield stress sigma_y", self.sigma_y, lambda v: v >= 0, ">= 0"),
                  ("hardening modulus H", self.hardening, lambda v: v >= 0, ">= 0"),
                  ("Norton stress K", self.norton_k, lambda v: v > 0, "> 0"),
                  ("Norton exponent n", self.norton_n, lambda v: v >= 1, ">= 1")]
        for name, coef, ok, want in checks:
            with np.errstate(all="ignore"):
                value = self._eval(coef, T)
                bad = ~ok(value)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                return f"the {name} is {value[i]:.4g} at T = {T[i]:.6g} K (expected {want})"
        return None

    @staticmethod
    def _eval(coef: Coefficient, T: np.ndarray) -> np.ndarray:
        if callable(coef):
            return np.broadcast_to(np.asarray(coef(T), dtype=np.float64), T.shape)
        return np.full(T.shape, float(coef))

    def elastic_moduli(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bulk and shear moduli :math:`\\kappa(T) = E/(3(1-2\\nu))`, :math:`G(T) = E/(2(1+\\nu))`, each ``(Q,)``."""
        E, nu = self._eval(self.young, T), self._eval(self.poisson, T)
        return E / (3.0 * (1.0 - 2.0 * nu)), E / (2.0 * (1.0 + nu))

    def elastic_tangent(self, T: np.ndarray) -> np.ndarray:
        """Isotropic elasticity :math:`\\mathbb C(T)` in Mandel form, shape ``(Q, 6, 6)``."""
        return _isotropic(*self.elastic_moduli(np.asarray(T, dtype=np.float64)))

    def thermal_strain(self, T: np.ndarray) -> np.ndarray:
        """:math:`\\alpha(T)(T - T_\\mathrm{ref}) I` in Mandel form, shape ``(Q, 6)``."""
        T = np.asarray(T, dtype=np.float64)
        return (self._eval(self.alpha, T) * (T - self.t_ref))[:, None] * IDENTITY

    def update(
        self, eps: np.ndarray, state: MaterialState, T: np.ndarray, dt: float
    ) -> tuple[np.ndarray, MaterialState, np.ndarray]:
        """One backward-Euler step of the constitutive law at ``Q`` points.

        Parameters
        ----------
        eps : ndarray, shape ``(Q, 6)``
            Total strain at the end of the step, Mandel form (plane strain: ``eps[:, 2:5] = 0``).
        state : MaterialState
            Internal variables at the start of the step.
        T : ndarray, shape ``(Q,)``
            Temperature at the end of the step.
        dt : float
            Time step, > 0.

        Returns
        -------
        sigma : ndarray, shape ``(Q, 6)``
            Cauchy stress, Mandel form.
        state : MaterialState
            Internal variables at the end of the step.
        tangent : ndarray, shape ``(Q, 6, 6)``
            Consistent tangent :math:`\\partial\\sigma/\\partial\\varepsilon` (symmetric), Mandel form.

        Notes
        -----
        The scalar equation for :math:`y = \\ln\\Delta p` is
        :math:`h(y) = y - \\ln\\Delta t - n\\ln(f/K)` with
        :math:`h' = 1 + n c e^y / f` and :math:`h'' = n c e^y f^\\mathrm{tr} / f^2 > 0`,
        :math:`c = 3G + H`. Newton starts at :math:`\\Delta p_0 = \\Delta t (f^\\mathrm{tr}/K)^n`
        when that is below :math:`f^\\mathrm{tr}/c` (then :math:`h \\ge 0` there), else at
        :math:`(1 - \\tfrac12 r^{1/n}) f^\\mathrm{tr}/c` with
        :math:`r = (f^\\mathrm{tr}/c)/\\Delta p_0 < 1`, where :math:`h \\ge (n-1)\\ln 2 \\ge 0`.
        From the right of the root of an increasing convex function Newton decreases
        monotonically to it and never leaves :math:`0 < \\Delta p < f^\\mathrm{tr}/c`.
        """
        eps = np.asarray(eps, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        nq = state.n_points
        if eps.shape != (nq, 6) or T.shape != (nq,) or state.eps_p.shape != (nq, 6):
            raise ValueError(
                f"expected eps (Q, 6), T (Q,) and state.eps_p (Q, 6) with Q = {nq}, "
                f"got {eps.shape}, {T.shape} and {state.eps_p.shape}"
            )
        if not dt > 0.0:
            raise ValueError(f"expected dt > 0, got {dt!r}")
        kappa, G = self.elastic_moduli(T)
        sy = self._eval(self.sigma_y, T)
        H = self._eval(self.hardening, T)
        K = self._eval(self.norton_k, T)
        n = self._eval(self.norton_n, T)

        ee = eps - state.eps_p - self.thermal_strain(T)
        tr = ee[:, :3].sum(axis=1)
        s_tr = 2.0 * G[:, None] * (ee - tr[:, None] * IDENTITY / 3.0)
        q_tr = np.sqrt(1.5 * np.einsum("qi,qi->q", s_tr, s_tr))
        f_tr = q_tr - sy - H * state.p
        plastic = f_tr > 0.0

        dp = np.zeros(nq)
        sigma = s_tr + (kappa * tr)[:, None] * IDENTITY
        eps_p = state.eps_p.copy()
        tangent = _isotropic(kappa, G)
        if plastic.any():
            i = plastic
            Gi, Hi, qi, ni = G[i], H[i], q_tr[i], n[i]
            dp[i] = dpi = self._solve_increment(f_tr[i], 3.0 * Gi + Hi, K[i], ni, dt)
            N = 1.5 * s_tr[i] / qi[:, None]
            f = f_tr[i] - (3.0 * Gi + Hi) * dpi
            beta = ni * dpi / (f + ni * dpi * (3.0 * Gi + Hi))
            sigma[i] -= (2.0 * Gi * dpi)[:, None] * N
            eps_p[i] += dpi[:, None] * N
            NN = np.einsum("qi,qj->qij", N, N)
            tangent[i] -= (4.0 * Gi**2 * beta)[:, None, None] * NN + (6.0 * Gi**2 * dpi / qi)[:, None, None] * (
                P_DEV - 2.0 / 3.0 * NN
            )
        return sigma, MaterialState(eps_p, state.p + dp), tangent

    def _solve_increment(self, f_tr: np.ndarray, c: np.ndarray, K: np.ndarray, n: np.ndarray, dt: float) -> np.ndarray:
        """Vectorised Newton on :math:`y = \\ln\\Delta p` (see :meth:`update`); inputs ``(M,)``, ``f_tr > 0``."""
        log_dt = math.log(dt)
        dp_max = f_tr / c
        log_dp0 = log_dt + n * np.log(f_tr / K)
        ratio = np.exp(np.minimum(np.log(dp_max) - log_dp0, 0.0))  # (f_tr/c) / dp0, capped at 1
        y = np.where(log_dp0 < np.log(dp_max), log_dp0, np.log(dp_max * (1.0 - 0.5 * ratio ** (1.0 / n))))
        active = np.arange(f_tr.shape[0])
        for _ in range(self.max_newton):
            ya = y[active]
            x = np.exp(ya)
            f = f_tr[active] - c[active] * x
            h = ya - log_dt - n[active] * np.log(f / K[active])
            dh = 1.0 + n[active] * c[active] * x / f
            step = h / dh
            y[active] = ya - step
            active = active[np.abs(step) > self.newton_tol]
            if active.size == 0:
                return np.exp(y)
        raise RuntimeError(
            f"ThermoViscoplasticJ2: the return mapping did not converge in {self.max_newton} Newton "
            f"iterations at {active.size} of {f_tr.size} plastic points"
        )
