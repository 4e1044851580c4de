"""Error-indicator adaptive POD-ROM on a thermo-viscoplastic body (Casenave & Akkari, 2019).

Case kind ``rom_adaptive``. Two academic bodies (``mesh.geometry``) with their own boundary
conditions and loads: the plane-strain plate (:func:`~sciml.solvers.rom.academic_plate`, imposed
displacement cycles) and the 3D blade-like body (:func:`~sciml.solvers.rom.academic_blade`: a
twisted, tapered aerofoil extrusion of hexahedra, clamped root, centrifugal load in
spin-up/spin-down cycles; its shape and rotation in the ``blade`` block). Any other mesh, a
``box`` (Q4 or hex8), a ``plate_hole`` (Q4, or hex8 extruded along z) or a ``file`` read with meshio
(:func:`sciml.meshes.read_mesh`), takes its conditions from ``boundary``: node sets (a plane
``{axis, value}``, a circle/sphere ``{centre, radius}`` or in 3D a cylinder along z ``{centre: [x, y],
radius}``) with imposed displacement components
or a pressure on the boundary faces of the set (consistent nodal forces,
:meth:`~sciml.solvers.rom.Discretisation.pressure_forces`). ``rotation`` adds a centrifugal load
to any body but the blade (whose rotation is in ``blade``). Every mechanical load is scaled by
the load factor of ``loading.cycle`` (a named cycle, ``constant``, or a formula in ``t``), or by
its own ``factor`` (boundary entries and ``rotation``): each distinct history is a load group with
its own factor in the HF model and its own lift and external load in the reduced model. A
high-fidelity run of a *training* loading gives the snapshots; POD, ECM and the Gappy-POD of the
plastic strain make the reduced model; it is then run on a *new* loading (another temperature field) three ways: as trained (plain
POD-ECM ROM), and adaptively (thermo-elastic enrichment of the new temperature field
before the run, then one HF step whenever the indicator exceeds its threshold).
A high-fidelity run of the new loading is the reference for the errors.

The temperature fields (``training``, ``online``) are a Gaussian hot spot (``type: hot_spot``,
the default: ``centre``, ``peak``, ``radius``), a formula (``type: expression``, ``value``: T in
K of ``x, y, z`` in mm and ``t`` in s, parsed and checked at validation, never passed to
``eval``) or a table of nodal values (``type: file``, ``path`` of an ``.npz`` with ``times`` and
``temperature``, or of VTK files a thermal solver wrote for ParaView: a ``.pvd`` series of
``.vtu``/``.pvtu``, its point array named by ``array``; formats in
:mod:`sciml.solvers.rom.temperature`; at validation the mesh nodes are found in it and its times
are checked against the steps).

Under MPI the cells are cut into blocks of ``mesh.block_size`` (independent of the
number of ranks) and every reduction is a block-ordered sum, so the metrics other
than timings agree on any number of ranks. ``hf.linear_solver`` picks the linear solve of
the HF Newton: ``direct`` (SuperLU, redundant on every rank) or ``cg`` (block-Jacobi CG on
the row-distributed tangent, blocks of ``hf.row_block`` rows, also rank-independent).

Metrics: ``max_rel_error_u`` (mass-weighted, max over steps, accepted states of the
adaptive run), ``max_rel_error_p`` (L2, over the steps whose reference max p exceeds ``rom.p_floor``,
from the constitutive update replayed along the reduced trajectory), ``max_rel_error_p_gappy``
(the Gappy-POD estimate of p), ``max_rel_error_u_nonadaptive`` (plain ROM),
``max_rel_error_u_enriched_nonadaptive``, ``hf_steps_used``, ``n_steps``, ``n_modes``,
``n_ecm_points``, ``n_integration_points``, ``indicator_error_spearman`` (indicator vs
the error of the reduced prediction it judged, adaptive run),
``indicator_error_spearman_nonadaptive``, ``speedup_online_step``,
``speedup_online_total`` (whole adaptive run, enrichment, HF steps, replays and
updates included, against the reference HF run), ``offline_s``, ``world_size``. Where a number is
undefined it is ``null``: the Spearman correlations when the indicator (or the error) is constant, e.g.
an elastic run; the p errors when no step's reference p exceeds ``rom.p_floor``.

Checkpoints (``checkpoints/latest.pt``; the HF fields of each step in ``checkpoints/hf_<run>/``,
written once) follow every HF step of both HF runs, the offline ROM,
the plain ROM run, the online setup and every step of the adaptive run (with the ROM's whole
adaptive state); ``sciml resume`` continues from the last one to the same metrics, timings
aside (the HF runs on any number of ranks, the ROM stages on the number they were saved on).

Times are CPU times of the process (:func:`time.process_time`, maximum over ranks), so that
the speed-ups do not depend on the load of a shared machine; run single-threaded
(``OMP_NUM_THREADS=1``) for a fair count.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

from sciml.config import NumberExpr, Schema, case_relative_path, number_as_text
from sciml.runs import load_arrays, save_arrays

__all__ = ["Config", "run", "hf_model", "load_hf_history"]


# --------------------------------------------------------------------------- schema
#: keys of each geometry (those of the others stay null: the resolved config.yaml writes every key, so
#: "set by the user" must be "not null" for `sciml resume` to reload it), and those it cannot do without
_GEOMETRY_KEYS = {"plate": ("nx", "ny"), "blade": ("n_chord", "n_thickness", "n_span"),
                  "box": ("nx", "ny", "nz", "size"), "plate_hole": ("n_around", "n_radial", "size", "radius", "nz"),
                  "file": ("file",)}
_REQUIRED_KEYS = {"box": ("nx", "ny", "size"), "plate_hole": ("n_around", "n_radial", "size", "radius"),
                  "file": ("file",)}
_CELL_DEFAULTS = {"nx": 80, "ny": 40, "n_chord": 16, "n_thickness": 4, "n_span": 16}
#: the academic bodies, with their own boundary conditions (every other geometry takes them from `boundary`)
_ACADEMIC = ("plate", "blade")


class Mesh(Schema):
    geometry: Literal["plate", "blade", "box", "plate_hole", "file"] = Field(
        "plate", description="plate: the academic plane-strain plate; blade: the 3D blade; box: a structured box, "
        "Q4 or hex8 by the length of size; plate_hole: a plate with a centred circular hole, Q4 or hex8 (extruded) by "
        "the length of size; file: a mesh file "
        "(implied by the key file)")
    nx: Optional[int] = Field(None, ge=1, le=2000, description="plate (default 80; on [0, 2] mm) or box: cells along x")
    ny: Optional[int] = Field(None, ge=1, le=2000, description="plate (default 40; on [0, 1] mm) or box: cells along y")
    nz: Optional[int] = Field(None, ge=1, le=2000, description="3D box or 3D plate_hole: cells along z")
    size: Optional[tuple[NumberExpr, ...]] = Field(
        None, description="box: [lx, ly] (Q4) or [lx, ly, lz] (hex8), the box [0, lx] x ...; plate_hole: [lx, ly] "
        "(Q4) or [lx, ly, lz] (hex8: the plate extruded along z over [0, lz]) (mm)")
    n_chord: Optional[int] = Field(None, ge=2, le=2000, description="blade: hexahedra along the chord (default 16)")
    n_thickness: Optional[int] = Field(None, ge=1, le=200,
                                       description="blade: hexahedra through the thickness (default 4)")
    n_span: Optional[int] = Field(None, ge=1, le=2000, description="blade: hexahedra along the span (default 16)")
    n_around: Optional[int] = Field(None, ge=1, le=2000,
                                    description="plate_hole: cells along each side, and along each quarter of the hole")
    n_radial: Optional[int] = Field(None, ge=1, le=2000, description="plate_hole: cells from the hole to the sides")
    radius: Optional[NumberExpr] = Field(None, gt=0, description="plate_hole: radius of the hole (mm)")
    file: Optional[Path] = Field(
        None, description="a mesh meshio reads (.msh, .vtu, .inp, ...) of quad or hexahedron cells, relative to the "
        "case file; its nodes in the file's order (unused ones dropped)")
    block_size: int = Field(128, ge=1, description="cells per block of the ordered reductions (fixed, not per rank)")

    @model_validator(mode="before")
    @classmethod
    def _file_implies_geometry(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("file") is not None and "geometry" not in data:
            return {**data, "geometry": "file"}
        return data

    @field_validator("file", mode="after")
    @classmethod
    def _readable(cls, value: Optional[Path], info) -> Optional[Path]:
        value = case_relative_path(value, info)
        if value is not None:
            from sciml.meshes.files import read_mesh

            read_mesh(value)  # ValueError: what is wrong with it
        return value

    @model_validator(mode="after")
    def _keys_of_the_geometry(self) -> "Mesh":
        mine = _GEOMETRY_KEYS[self.geometry]
        wrong = [k for keys in _GEOMETRY_KEYS.values() for k in keys if k not in mine and getattr(self, k) is not None]
        if wrong:
            raise ValueError(f"'{wrong[0]}' is not a key of geometry {self.geometry!r} (its keys: {', '.join(mine)})")
        missing = [k for k in _REQUIRED_KEYS.get(self.geometry, ()) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"geometry {self.geometry} needs the key '{missing[0]}'")
        if self.geometry in ("box", "plate_hole"):
            if len(self.size) not in (2, 3) or min(self.size) <= 0:
                raise ValueError(f"size: expected 2 or 3 positive lengths, got {list(self.size)}")
            if (len(self.size) == 3) != (self.nz is not None):
                body = "3D box" if self.geometry == "box" else "3D plate_hole"
                raise ValueError(f"nz: a key of the {body} (size of 3 lengths) only" if self.nz is not None
                                 else f"nz: missing, the cells along z of the {body}")
        if self.geometry == "plate_hole" and not self.radius < 0.5 * min(self.size[:2]):
            raise ValueError(f"radius: the hole must lie inside the plate, expected < {0.5 * min(self.size[:2])}")
        return self

    def cells(self) -> tuple[int, ...]:
        """The cell counts of a structured geometry, defaults filled in: ``(nx, ny)``, ``(nx, ny, nz)``,
        ``(n_chord, n_thickness, n_span)``, ``(n_around, n_radial)`` or ``(n_around, n_radial, nz)``
        (empty for a file)."""
        keys = [k for k in _GEOMETRY_KEYS[self.geometry] if k not in ("size", "radius", "file")]
        if self.geometry in ("box", "plate_hole") and self.nz is None:
            keys.remove("nz")
        return tuple(getattr(self, k) if getattr(self, k) is not None else _CELL_DEFAULTS[k] for k in keys)

    def build(self) -> tuple[np.ndarray, np.ndarray, str]:
        """Points, cells and kind of a box, plate_hole or file mesh (the academic bodies are built by
        their own functions), read or generated once per process."""
        return _build_mesh(self)

    def dim(self) -> int:
        if self.geometry in _ACADEMIC:
            return 2 if self.geometry == "plate" else 3
        return 2 if self.build()[2] == "quad" else 3

    def n_nodes(self) -> int:
        if self.geometry in _ACADEMIC:
            return int(np.prod([n + 1 for n in self.cells()]))
        return self.build()[0].shape[0]

    def describe(self) -> str:
        """A short name for the log: ``plate 80x40``, ``box 8x4x2``, ``file part.msh``, ..."""
        if self.geometry == "file":
            return f"file {self.file.name}"
        return f"{self.geometry} {'x'.join(map(str, self.cells()))}"


@functools.lru_cache(maxsize=4)
def _build_mesh(mesh: Mesh) -> tuple[np.ndarray, np.ndarray, str]:
    from sciml.meshes import box_mesh_2d, box_mesh_3d, extrude_mesh, plate_with_hole_mesh, read_mesh

    if mesh.geometry == "box":
        if len(mesh.size) == 2:
            return (*box_mesh_2d(mesh.nx, mesh.ny, *mesh.size), "quad")
        return (*box_mesh_3d(mesh.nx, mesh.ny, mesh.nz, *mesh.size), "hexahedron")
    if mesh.geometry == "plate_hole":
        plate = plate_with_hole_mesh(mesh.n_around, mesh.n_radial, *mesh.size[:2], mesh.radius)
        if len(mesh.size) == 2:
            return (*plate, "quad")
        return (*extrude_mesh(*plate, mesh.nz, mesh.size[2]), "hexahedron")
    if mesh.geometry == "file":
        return read_mesh(mesh.file)
    raise ValueError(f"geometry {mesh.geometry!r} is built by its own function")


_AXES = ("x", "y", "z")


class Where(Schema):
    """A node set of the mesh: the nodes on a plane ``{axis, value}``, or at the distance ``radius`` from
    ``centre`` (a circle in 2D, a sphere in 3D; in 3D a centre ``[x, y]`` of two coordinates gives the
    cylinder along z: the hole of a 3D plate_hole), within ``tol``."""

    axis: Optional[Literal["x", "y", "z"]] = Field(None, description="plane: the coordinate axis it is normal to")
    value: Optional[NumberExpr] = Field(None, description="plane: its position along axis (mm)")
    centre: Optional[tuple[NumberExpr, ...]] = Field(
        None, description="circle/sphere: centre (mm); in 3D [x, y]: the axis of a cylinder along z")
    radius: Optional[NumberExpr] = Field(None, ge=0, description="circle/sphere/cylinder: radius (mm)")
    tol: Optional[NumberExpr] = Field(None, gt=0, description="absolute tolerance (default 1e-6 x the mesh's extent)")

    @model_validator(mode="after")
    def _one_set(self) -> "Where":
        plane = self.axis is not None or self.value is not None
        sphere = self.centre is not None or self.radius is not None
        if plane == sphere:
            raise ValueError("expected a plane {axis, value} or a circle/sphere {centre, radius}")
        missing = [k for k in (("axis", "value") if plane else ("centre", "radius")) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{missing[0]}: missing")
        return self

    def nodes(self, points: np.ndarray) -> np.ndarray:
        """The selected nodes of ``points (P, dim)``, increasing."""
        from sciml.meshes import nodes_on_plane, nodes_on_sphere

        dim = points.shape[1]
        tol = self.tol if self.tol is not None else 1e-6 * float(np.ptp(points, axis=0).max())
        if self.axis is not None:
            if _AXES.index(self.axis) >= dim:
                raise ValueError(f"a plane normal to {self.axis} in a {dim}D mesh")
            return nodes_on_plane(points, _AXES.index(self.axis), self.value, tol)
        if len(self.centre) not in ((2,) if dim == 2 else (2, 3)):
            raise ValueError(f"a centre of {len(self.centre)} coordinates in a {dim}D mesh")
        return nodes_on_sphere(points[:, :len(self.centre)], self.centre, self.radius, tol)

    def describe(self) -> str:
        return f"{self.axis} = {self.value}" if self.axis is not None else f"|x - {list(self.centre)}| = {self.radius}"


def _history(value: Any) -> Any:
    """A load-factor history (:func:`~sciml.solvers.rom.load_history`): a name or a formula in t, a
    number read as the formula of a constant; the formula parsed here, its values checked at the
    steps of the run (:meth:`Config._histories_at_the_steps`)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = repr(float(value))
    if isinstance(value, str):
        from sciml.solvers.rom.fem import parse_history

        parse_history(value)  # ValueError: what is not allowed in it
        return value.strip()
    return value


_FACTOR_HELP = ("load factor history of this load: reversed, one_sided, constant or a formula in t (s), e.g. "
                "min(t/10, 1) (default: loading.cycle)")


class Boundary(Schema):
    """Conditions on a node set (geometries box, plate_hole, file); every value is scaled by the load
    factor, the loading's or the entry's own ``factor``."""

    where: Where
    displacement: Optional[dict[Literal["x", "y", "z"], NumberExpr]] = Field(
        None, description="imposed components at load factor 1 (mm; 0 fixes one), e.g. {x: 0.01}; the others free")
    pressure: Optional[NumberExpr] = Field(
        None, description="pressure at load factor 1 (MPa; positive pushes into the body) on the boundary faces "
        "whose nodes all lie in the set")
    factor: Optional[str] = Field(None, description=_FACTOR_HELP)

    _factor = field_validator("factor", mode="before")(_history)

    def is_load(self) -> bool:
        """Whether the entry loads the body (a pressure or a nonzero displacement), not only supports it."""
        return self.pressure is not None or any(v != 0 for v in (self.displacement or {}).values())

    @model_validator(mode="after")
    def _a_condition(self) -> "Boundary":
        if not self.displacement and self.pressure is None:
            raise ValueError("expected a displacement or a pressure on the set")
        return self

class Blade(Schema):
    """Shape (mm) and rotation of the blade (:func:`~sciml.solvers.rom.academic_blade`)."""

    span: NumberExpr = Field(40.0, gt=0, description="length along z, root at z = 0")
    chord_root: NumberExpr = Field(20.0, gt=0)
    chord_tip: NumberExpr = Field(14.0, gt=0)
    thickness: NumberExpr = Field(0.2, gt=0, le=0.4, description="NACA relative thickness")
    camber: NumberExpr = Field(0.04, ge=0, le=0.1, description="NACA relative camber")
    twist_deg: NumberExpr = Field(30.0, ge=-90, le=90, description="tip twist about z (degrees, linear in z)")
    hub_radius: NumberExpr = Field(100.0, ge=0, description="distance of the root from the rotation axis (along x)")
    omega: NumberExpr = Field(3000.0, ge=0, description="rotation speed at load factor 1 (rad/s)")
    density: NumberExpr = Field(8.2e-9, gt=0, description="t/mm^3")

    def shape(self) -> dict[str, float]:
        """The shape keywords of :func:`~sciml.meshes.blade_mesh` (and of ``academic_blade``)."""
        return {"span": self.span, "chord_root": self.chord_root, "chord_tip": self.chord_tip,
                "thickness": self.thickness, "camber": self.camber, "twist": float(np.radians(self.twist_deg))}


class Rotation(Schema):
    """A rotation of the body (any geometry but the blade, whose rotation is in ``blade``): the
    centrifugal body force rho omega^2 r_perp (:func:`~sciml.solvers.rom.centrifugal`), scaled by
    the load factor, (omega(t) / omega)^2."""

    omega: NumberExpr = Field(..., ge=0, description="rotation speed at load factor 1 (rad/s)")
    density: NumberExpr = Field(8.2e-9, gt=0, description="t/mm^3 (default: a nickel superalloy)")
    axis_point: tuple[NumberExpr, ...] = Field(..., description="a point of the rotation axis (mm)")
    axis_direction: tuple[NumberExpr, ...] = Field(
        ..., description="direction of the axis; in 2D [0, 0, 1] (a spinning section) or in the plane z = 0")
    factor: Optional[str] = Field(None, description=_FACTOR_HELP + "; the factor is (omega(t)/omega)^2")

    _factor = field_validator("factor", mode="before")(_history)

    @model_validator(mode="after")
    def _axis(self) -> "Rotation":
        if len(self.axis_point) not in (2, 3) or len(self.axis_direction) != len(self.axis_point):
            raise ValueError("axis_direction: expected as many coordinates as axis_point, 2 or 3")
        if not any(self.axis_direction):
            raise ValueError("axis_direction: expected a nonzero direction")
        return self


class Loading(Schema):
    n_steps: int = Field(40, ge=2, le=100000)
    n_cycles: int = Field(2, ge=1)
    cycle: Optional[str] = Field(
        None, description="load factor in time: n_cycles triangle cycles reversed 0 -> 1 -> 0 -> -1 -> 0 (default) "
        "or one_sided 0 -> 1 -> 0 (the blade's default), constant (1), or a formula in t (s), e.g. sin(2*pi*t/20)")

    _cycle = field_validator("cycle", mode="before")(_history)
    amplitude: Optional[NumberExpr] = Field(
        None, gt=0, description="plate: imposed u_x on x = 2 at load factor 1 (mm; default 0.01)")
    dt: NumberExpr = Field(1.0, gt=0, description="time step (s)")
    ramp_time: NumberExpr = Field(10.0, gt=0, description="time for the temperature rise to its peak (s)")


#: keys of each temperature type (the others stay null, see Mesh), and those it may go without
_TEMPERATURE_KEYS = {"hot_spot": ("centre", "peak", "radius"), "expression": ("value",), "file": ("path", "array")}
_OPTIONAL_TEMPERATURE_KEYS = ("array",)


class Temperature(Schema):
    """The temperature field of a loading (:mod:`sciml.solvers.rom.temperature`): a hot spot (the
    default type), an expression in x, y, z, t, or a table of nodal values read from a file."""

    type: Literal["hot_spot", "expression", "file"] = Field(
        "hot_spot", description="hot_spot: centre, peak, radius; expression: value; file: path")
    centre: Optional[tuple[NumberExpr, ...]] = Field(
        None, description="hot_spot: x_c of T = 293 + dT(t) exp(-|x - x_c|^2 / radius^2), dT rising linearly "
        "to peak over loading.ramp_time")
    peak: Optional[NumberExpr] = Field(None, ge=0, description="hot_spot: peak temperature rise dT (K)")
    radius: Optional[NumberExpr] = Field(None, gt=0, description="hot_spot: radius of the hot spot (mm; default 0.3)")
    value: Optional[str] = Field(
        None, description="expression: T (K) in x, y, z (mm; z = 0 in 2D) and t (s), with + - * / **, pi, e and "
        "exp log sqrt abs sin cos tan tanh min max, e.g. 293 + 400*exp(-((x-1.4)**2+(y-0.3)**2)/0.09)*min(t/10, 1)")
    path: Optional[Path] = Field(
        None, description="file: relative to the case file; .npz with times (S,) covering 0 to the last step and "
        "temperature (S, mesh nodes) (+ points (mesh nodes, dim)), or VTK: a .pvd time series of .vtu/.pvtu, or one "
        ".vtu/.vtk (constant in time); one time only: held constant")
    array: Optional[str] = Field(
        None, description="file, VTK: the scalar point array of the temperature (default: temperature, T, or the "
        "only scalar one)")

    @model_validator(mode="before")
    @classmethod
    def _default_radius(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type", "hot_spot") == "hot_spot" and "radius" not in data:
            return {**data, "radius": 0.3}
        return data

    _value_text = field_validator("value", mode="before")(number_as_text)  # value: 900, a constant field

    @field_validator("value", mode="after")
    @classmethod
    def _expression(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            from sciml.solvers.rom.temperature import ExpressionTemperature

            ExpressionTemperature(value)  # ValueError: what is not allowed in it
        return value

    @field_validator("path", mode="after")
    @classmethod
    def _relative(cls, value: Optional[Path], info) -> Optional[Path]:
        return case_relative_path(value, info)

    @model_validator(mode="after")
    def _keys_of_the_type(self) -> "Temperature":
        mine = _TEMPERATURE_KEYS[self.type]
        wrong = [k for keys in _TEMPERATURE_KEYS.values() for k in keys
                 if k not in mine and getattr(self, k) is not None]
        if wrong:
            raise ValueError(f"{wrong[0]}: not a key of type {self.type} (its keys: {', '.join(mine)})")
        missing = [k for k in mine if getattr(self, k) is None and k not in _OPTIONAL_TEMPERATURE_KEYS]
        if missing:
            raise ValueError(f"type {self.type} needs the key '{missing[0]}'")
        if self.type == "file":
            self.table()  # what is wrong with the file
        return self

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Times, values and points of a ``file`` temperature
        (:func:`~sciml.solvers.rom.temperature.read_temperature_table`); ValueError names the key at fault."""
        from sciml.meshes.files import PointArrayError
        from sciml.solvers.rom.temperature import read_temperature_table

        try:
            return read_temperature_table(self.path, self.array)
        except ValueError as exc:
            key = "array" if isinstance(exc, PointArrayError) and self.array is not None else "path"
            raise ValueError(f"{key}: {exc}") from None


class HF(Schema):
    # The cg keys stay null with the direct solver (see Mesh); cg_settings() fills in defaults.
    linear_solver: Literal["direct", "cg"] = Field("direct", description="SuperLU (redundant) or distributed CG")
    cg_rtol: Optional[NumberExpr] = Field(
        None, gt=0, lt=1, description="cg: largest relative residual of one linear solve; "
        "inside Newton it follows the Newton residual (default 1e-2)")
    row_block: Optional[int] = Field(
        None, ge=1, description="cg: rows per block of the distribution and of block-Jacobi (default 4096)")
    preconditioner: Optional[Literal["block_lu", "block_amg"]] = Field(
        None, description="cg: SuperLU of each diagonal block, or one pyamg V-cycle on it (default block_lu)")
    cg_max_iter: Optional[int] = Field(None, ge=1, description="cg: iteration limit (default 5000)")

    @model_validator(mode="after")
    def _cg_keys(self) -> "HF":
        wrong = [k for k in _CG_DEFAULTS if getattr(self, k) is not None]
        if self.linear_solver == "direct" and wrong:
            raise ValueError(f"'{wrong[0]}' is a key of linear_solver: cg, not of direct")
        return self

    def cg_settings(self) -> dict[str, Any]:
        """The cg keys, defaults filled in."""
        return {k: getattr(self, k) if getattr(self, k) is not None else v for k, v in _CG_DEFAULTS.items()}


_CG_DEFAULTS = {"cg_rtol": 1e-2, "row_block": 4096, "preconditioner": "block_lu", "cg_max_iter": 5000}


class ROM(Schema):
    pod_tol: NumberExpr = Field(1e-6, gt=0, lt=1, description="relative Frobenius error of the displacement POD")
    ecm_tol: NumberExpr = Field(1e-5, gt=0, le=1e-2, description="relative residual of the ECM (at most 1e-2: "
                                "looser, the reduced forces are integrated too coarsely for any useful ROM, and a few "
                                "points cannot hold the modes' stiffness)")
    gappy_tol: NumberExpr = Field(1e-6, gt=0, lt=1, description="relative Frobenius error of the POD of p")
    indicator_tol: NumberExpr = Field(0.02, gt=0, description="HF step when the indicator exceeds it")
    p_floor: NumberExpr = Field(1e-6, ge=0, description="max |p| at the reduced points below which a step is elastic")
    monitor_points: int = Field(8, ge=0, description="weight-0 monitor points from the new loading")
    thermoelastic_levels: int = Field(3, ge=0, description="temperature levels of the thermo-elastic enrichment")
    ecm_batch: int = Field(8, ge=1, description="ECM points per correlation pass")
    tangent_snapshots: bool = Field(True, description="each HF step adds its tangent response to the load to the basis")
    max_modes: int | None = Field(None, ge=1)


class Output(Schema):
    paraview: bool = True
    plots: bool = True
    keep_checkpoints: bool = Field(False, description="also keep every checkpoint as checkpoints/step_*.pt")


class Config(Schema):
    kind: Literal["rom_adaptive"]
    seed: int = Field(0, ge=0, le=2**63 - 1,
                      description="unused (the case is deterministic); kept for the run record")
    mesh: Mesh = Mesh()
    loading: Loading = Loading()
    training: Temperature = Field(Temperature(centre=(0.5, 0.5), peak=700.0),
                                  description="temperature field of the training loading")
    online: Temperature = Field(Temperature(centre=(1.4, 0.3), peak=750.0),
                                description="temperature field of the new loading the ROM is run on")
    blade: Blade | None = Field(None, description="geometry blade: shape and rotation (defaults when omitted)")
    rotation: Rotation | None = Field(None, description="centrifugal load of a rotation (not with the blade)")
    boundary: list[Boundary] = Field(
        default_factory=list, description="geometries box, plate_hole, file: imposed displacements and pressures "
        "on node sets")
    hf: HF = HF()
    rom: ROM = ROM()
    output: Output = Output()

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        dim = self.mesh.dim()
        for name in ("training", "online"):
            centre = getattr(self, name).centre
            if centre is not None and len(centre) != dim:
                raise ValueError(f"{name}.centre: expected {dim} coordinates for geometry {self.mesh.geometry!r}, "
                                 f"got {len(centre)}")
        if self.blade is not None and self.mesh.geometry != "blade":
            raise ValueError("blade: only with mesh.geometry: blade")
        if self.mesh.geometry == "blade" and self.loading.amplitude is not None:
            raise ValueError("loading.amplitude: the blade has no imposed displacement (its load is blade.omega)")
        if self.rotation is not None:
            r = self.rotation
            if self.mesh.geometry == "blade":
                raise ValueError("rotation: the blade's rotation is blade.omega, blade.hub_radius, ...")
            if len(r.axis_point) != dim and not (dim == 2 and len(r.axis_point) == 3):
                raise ValueError(f"rotation: expected an axis of {dim} coordinates (or 3 in 2D) for geometry "
                                 f"{self.mesh.geometry!r}, got {len(r.axis_point)}")
            if len(r.axis_point) == 3 and dim == 2:
                along_z = r.axis_direction[0] == r.axis_direction[1] == 0
                if not along_z and (r.axis_direction[2] != 0 or r.axis_point[2] != 0):
                    raise ValueError("rotation: a 2D (plane-strain) body turns about the z direction or about an "
                                     "axis in the plane z = 0")
        if self.mesh.geometry in _ACADEMIC:
            if self.boundary:
                raise ValueError(f"boundary: the {self.mesh.geometry} has its own boundary conditions")
        else:
            if self.loading.amplitude is not None:
                raise ValueError("loading.amplitude: a key of the plate (elsewhere, displacements are in boundary)")
            if not any(b.displacement for b in self.boundary):
                raise ValueError(f"boundary: geometry {self.mesh.geometry} needs imposed displacements "
                                 "(e.g. - {where: {axis: x, value: 0.0}, displacement: {x: 0.0}})")
            points, cells, kind = self.mesh.build()
            dofs = self.dirichlet(points)[0]
            free = _free_rigid_motion(points, dofs, cells)
            if free:
                raise ValueError(f"boundary: the imposed displacements leave the body free to move ({free}): its "
                                 "stiffness is singular; impose enough components to hold it")
            self.pressures(points, cells, kind)
        return self

    @model_validator(mode="after")
    def _histories_at_the_steps(self) -> "Config":
        """Every load-factor history is finite at every step of the run."""
        from sciml.solvers.rom import load_history

        times = self.loading.dt * np.arange(1, self.loading.n_steps + 1)
        owners = [("loading.cycle", self.loading.cycle)] + [(f"boundary.{i}.factor", b.factor)
                                                            for i, b in enumerate(self.boundary)]
        if self.rotation is not None:
            owners.append(("rotation.factor", self.rotation.factor))
        for key, spec in owners:
            if spec is not None:
                try:
                    load_history(spec, times, self.loading.n_cycles)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _tables_fit(self) -> "Config":
        """A temperature table gives every mesh node and covers the run's times (or has one time)."""
        from sciml.solvers.rom.temperature import match_nodes

        for name in ("training", "online"):
            temperature = getattr(self, name)
            if temperature.type != "file":
                continue
            times, T, points = temperature.table()
            file = temperature.path.name
            if points is None:
                n = self.mesh.n_nodes()
                if T.shape[1] != n:
                    raise ValueError(f"{name}.path: table {file} has {T.shape[1]} node columns, the mesh has {n} "
                                     f"nodes (expected shape ({times.size}, {n}), or the nodes' points)")
            else:
                try:
                    match_nodes(self.node_points(), points)
                except ValueError as exc:
                    raise ValueError(f"{name}.path: {file}: {exc}") from None
            end = self.loading.n_steps * self.loading.dt
            if times.size > 1 and (times[0] > 0.0 or times[-1] < end * (1 - 1e-9)):
                raise ValueError(f"{name}.path: the times of table {file} span [{times[0]}, {times[-1]}], the run "
                                 f"needs 0 to {end} s ({self.loading.n_steps} steps of {self.loading.dt} s)")
        return self

    def input_files(self) -> list[tuple[tuple, Path]]:
        """The files the run reads through its temperature tables: a ``.pvd`` series' datasets and pieces
        (for ``sciml resume``'s check that no input changed)."""
        from sciml.meshes.files import point_series_files

        found = []
        for name in ("training", "online"):
            temperature = getattr(self, name)
            if temperature.type == "file" and temperature.path.suffix != ".npz":
                found += [((name, "path"), f) for f in point_series_files(temperature.path)[1:]]
        return found

    def resume_problems(self, folder: Path, world_size: int) -> list[str]:
        """What a resume of run ``folder`` on ``world_size`` ranks cannot do (checked by ``sciml resume``
        before any work): continue ROM stages checkpointed on another number of ranks (each rank's ROM
        state is its own file; the HF stages resume on any number)."""
        import torch

        path = folder / "checkpoints" / "latest.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state"]
            saved = int(state["world_size"]) if "ranks" in state else None
        except Exception:  # noqa: BLE001 - no checkpoint, or one the run itself will report on
            return []
        if saved is None or saved == world_size:
            return []
        return [f"{path}: the ROM stages were checkpointed on {saved} rank(s); resume on as many "
                f"(mpiexec -n {saved} sciml resume {folder}), not {world_size}"]

    @model_validator(mode="after")
    def _temperatures_admissible(self) -> "Config":
        """Each temperature field, as the HF model sees it (at the integration points, at every step and
        t = 0; a table interpolated in space and time), is finite and inside the range where the material
        law is defined (:meth:`ThermoViscoplasticJ2.inadmissible`)."""
        from sciml.solvers.rom import ThermoViscoplasticJ2
        from sciml.solvers.rom.fem import Discretisation

        law = ThermoViscoplasticJ2.academic()
        times = self.loading.dt * np.arange(self.loading.n_steps + 1)
        disc = Discretisation(*self._mesh())
        for name in ("training", "online"):
            temperature = getattr(self, name)
            field = _temperature_field(self, temperature, disc)
            key = {"expression": "value", "file": "path"}.get(temperature.type, "peak")
            for t in times:
                try:
                    with np.errstate(all="ignore"):
                        T = field(disc.qp_coords, float(t))
                except (ArithmeticError, ValueError) as exc:
                    raise ValueError(f"{name}.{key}: cannot be evaluated at t = {t:g} ({exc})") from None
                problem = law.inadmissible(T)
                if problem:
                    raise ValueError(f"{name}.{key}: at t = {t:g} s {problem}")
        return self

    def node_points(self) -> np.ndarray:
        """Coordinates ``(n_nodes, dim)`` of the mesh's nodes, in the numbering of the HF model."""
        return self._mesh()[0]

    def _mesh(self) -> tuple[np.ndarray, np.ndarray, str]:
        """Points, cells and cell kind of the HF model's mesh."""
        from sciml.meshes import blade_mesh, box_mesh_2d

        m = self.mesh
        if m.geometry == "plate":
            return (*box_mesh_2d(*m.cells(), 2.0, 1.0), "quad")
        if m.geometry == "blade":
            return (*blade_mesh(*m.cells(), **(self.blade or Blade()).shape()), "hexahedron")
        return m.build()

    def pressures(self, points: np.ndarray, cells: np.ndarray, kind: str) -> list[tuple[np.ndarray, float, int]]:
        """The boundary faces (outward, :func:`sciml.meshes.boundary_faces`), pressure and load group of
        each ``boundary`` entry with one; ValueError naming the entry when no face lies in its set."""
        from sciml.meshes import boundary_faces, faces_on

        faces = boundary_faces(cells, kind)
        out = []
        for i, b in enumerate(self.boundary):
            if b.pressure is None:
                continue
            mine = faces_on(faces, b.where.nodes(points))
            if not mine.size:
                raise ValueError(f"boundary.{i}: the set {b.where.describe()} has a pressure but no boundary face "
                                 f"of the mesh lies in it")
            out.append((mine, b.pressure, self.group_of(b)))
        return out

    def default_history(self) -> str:
        """The load-factor history of the loads without a ``factor`` of their own."""
        return self.loading.cycle or ("one_sided" if self.mesh.geometry == "blade" else "reversed")

    def load_groups(self) -> list[str]:
        """The distinct load-factor histories of the case's loads, group ``g``'s at ``g``: the
        academic bodies' own load (the plate's displacement, the blade's rotation) first, then the
        boundary loads and the rotation in order (a load without ``factor`` has the loading's)."""
        default = self.default_history()
        groups = [default] if self.mesh.geometry in _ACADEMIC else []
        loads = [b for b in self.boundary if b.is_load()] + ([self.rotation] if self.rotation is not None else [])
        for load in loads:
            if (load.factor or default) not in groups:
                groups.append(load.factor or default)
        return groups or [default]

    def group_of(self, load: "Boundary | Rotation") -> int:
        """The load group of a boundary entry or of the rotation (0 for a support, which loads nothing)."""
        if isinstance(load, Boundary) and not load.is_load():
            return 0
        return self.load_groups().index(load.factor or self.default_history())

    def load_factors(self, times: np.ndarray) -> np.ndarray:
        """Load factors of the steps ending at ``times``: ``(n_steps,)`` for one load group, else
        ``(n_steps, G)`` (:meth:`load_groups`)."""
        from sciml.solvers.rom import load_history

        lf = np.column_stack([load_history(g, times, self.loading.n_cycles) for g in self.load_groups()])
        return lf[:, 0] if lf.shape[1] == 1 else lf

    def dirichlet(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The imposed dofs (increasing), their values at load factor 1 and their load groups from
        ``boundary``; ValueError naming the entry when a set is empty, a component is not the mesh's
        or a dof gets two values (or one nonzero value under two load factors)."""
        dim = points.shape[1]
        imposed: dict[int, tuple[float, int]] = {}
        for i, b in enumerate(self.boundary):
            try:
                nodes = b.where.nodes(points)
            except ValueError as exc:
                raise ValueError(f"boundary.{i}: {exc}") from None
            if not nodes.size:
                lo, hi = points.min(axis=0), points.max(axis=0)
                raise ValueError(f"boundary.{i}: the set {b.where.describe()} selects no node (the mesh spans "
                                 f"{' x '.join(f'[{a:g}, {c:g}]' for a, c in zip(lo, hi))})")
            for comp, value in (b.displacement or {}).items():
                k = _AXES.index(comp)
                if k >= dim:
                    raise ValueError(f"boundary.{i}: imposes {comp} on a {dim}D mesh")
                mine = (value, self.group_of(b) if value != 0 else 0)
                for dof in (dim * nodes + k).tolist():
                    earlier = imposed.setdefault(dof, mine)
                    if earlier[0] != value:
                        raise ValueError(f"boundary.{i}: imposes {comp} = {value} on node {dof // dim}, "
                                         f"which an earlier entry sets to {earlier[0]}")
                    if earlier[1] != mine[1]:
                        raise ValueError(f"boundary.{i}: imposes {comp} = {value} on node {dof // dim} with "
                                         f"load factor {self.load_groups()[mine[1]]!r}, an earlier entry with "
                                         f"{self.load_groups()[earlier[1]]!r}")
        dofs = np.array(sorted(imposed), dtype=np.int64)
        return (dofs, np.array([imposed[d][0] for d in dofs.tolist()], dtype=np.float64),
                np.array([imposed[d][1] for d in dofs.tolist()], dtype=np.int64))


def _free_rigid_motion(points: np.ndarray, fixed_dofs: np.ndarray, cells: np.ndarray | None = None) -> str | None:
    """The rigid-body motion (translation or rotation, 3 in 2D, 6 in 3D) the imposed dofs ``fixed_dofs``
    do not prevent, described; None if they hold the body. A motion is free when it vanishes at every
    imposed dof: a null vector of the rigid modes restricted to those dofs. With ``cells``, each part of
    the mesh (cells connected through shared nodes) must be held on its own."""
    fixed_dofs = np.asarray(fixed_dofs, dtype=np.int64)
    dim = points.shape[1]
    if cells is not None:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = points.shape[0]
        pairs = np.stack([np.repeat(cells[:, 0], cells.shape[1]), cells.ravel()])  # each node to its cell's first
        n_parts, part = connected_components(coo_matrix((np.ones(pairs.shape[1]), pairs), shape=(n, n)),
                                             directed=False)
        if n_parts > 1:
            for k in range(n_parts):
                nodes = np.flatnonzero(part == k)
                if nodes.size == 1 and not np.isin(nodes, cells).any():
                    continue  # a node no cell uses
                local = np.full(n, -1)
                local[nodes] = np.arange(nodes.size)
                mine = fixed_dofs[part[fixed_dofs // dim] == k]
                free = _free_rigid_motion(points[nodes], dim * local[mine // dim] + mine % dim)
                if free:
                    return f"{free} of the part with node {int(nodes[0])} ({nodes.size} nodes; the mesh has " \
                           f"{n_parts} parts)"
            return None
    x = points - points.mean(axis=0)
    size = max(float(np.abs(x).max()), 1e-300)
    x = x / size
    names, modes = [], []
    for k, axis in enumerate("xyz"[:dim]):
        mode = np.zeros_like(x)
        mode[:, k] = 1.0
        names.append(f"translation along {axis}")
        modes.append(mode.reshape(-1))
    for axis, (i, j) in (("z", (0, 1)), ("x", (1, 2)), ("y", (2, 0)))[: 1 if dim == 2 else 3]:
        mode = np.zeros_like(x)
        mode[:, i], mode[:, j] = -x[:, j], x[:, i]
        names.append(f"rotation about {axis}")
        modes.append(mode.reshape(-1))
    R = np.stack(modes, axis=1)[fixed_dofs]
    if R.shape[0] == 0:
        return names[0]
    _, s, Vt = np.linalg.svd(R, full_matrices=True)
    rank = int((s > 1e-8 * max(float(s[0]), 1e-300)).sum()) if s.size else 0
    if rank == len(names):
        return None
    v = Vt[rank]  # a free combination of the modes
    main = int(np.argmax(np.abs(v)))
    return names[main] if abs(v[main]) > 0.99 * np.linalg.norm(v) else "a combination of " + ", ".join(
        names[k] for k in np.flatnonzero(np.abs(v) > 1e-6))


# --------------------------------------------------------------------------- pieces
def hf_model(cfg: Config, temperature: Temperature, comm):
    """The partitioned HF model of the case under the temperature field ``temperature``
    (``cfg.training`` or ``cfg.online``), with the step times and load factors
    (:meth:`Config.load_factors`: one column per load group when there are several)."""
    from sciml.solvers.rom import (CGSolver, DirectSolver, Dirichlet, Discretisation, HFModel, Partition,
                                   PartitionedHFModel, ThermoViscoplasticJ2, academic_blade, academic_plate,
                                   centrifugal)

    ld, m, r = cfg.loading, cfg.mesh, cfg.rotation
    spot = ({"centre": tuple(temperature.centre), "peak": temperature.peak, "radius": temperature.radius}
            if temperature.type == "hot_spot" else {})
    body = None if r is None else centrifugal(r.density, r.omega, r.axis_point, r.axis_direction)
    body_group = 0 if r is None else cfg.group_of(r)
    if m.geometry == "plate":
        amplitude = ld.amplitude if ld.amplitude is not None else 0.01
        model, times, _ = academic_plate(*m.cells(), n_steps=ld.n_steps, n_cycles=ld.n_cycles,
                                         amplitude=amplitude, ramp_time=ld.ramp_time, dt=ld.dt, body_force=body,
                                         body_group=body_group, **spot)
    elif m.geometry == "blade":
        b = cfg.blade or Blade()
        model, times, _ = academic_blade(*m.cells(), n_steps=ld.n_steps,
                                         n_cycles=ld.n_cycles, ramp_time=ld.ramp_time, dt=ld.dt, omega=b.omega,
                                         density=b.density, hub_radius=b.hub_radius, **b.shape(), **spot)
    else:
        points, cells, kind = m.build()
        disc = Discretisation(points, cells, kind)
        n_groups = len(cfg.load_groups())
        tractions = np.zeros((disc.n_dof, n_groups))
        for faces, pressure, group in cfg.pressures(points, cells, kind):
            tractions[:, group] += disc.pressure_forces(faces, pressure)
        dofs, values, groups = cfg.dirichlet(points)
        bcs = [Dirichlet(dofs[groups == g], values[groups == g], g) for g in range(n_groups)]
        model = HFModel(disc, ThermoViscoplasticJ2.academic(), bcs, _temperature_field(cfg, temperature, disc),
                        body_force=body, tractions=tractions, body_group=body_group)
        times = ld.dt * np.arange(1, ld.n_steps + 1)
    if m.geometry in _ACADEMIC and temperature.type != "hot_spot":
        model = model.with_temperature(_temperature_field(cfg, temperature, model.disc))
    h = cfg.hf.cg_settings()
    solver = (DirectSolver() if cfg.hf.linear_solver == "direct"
              else CGSolver(h["cg_rtol"], h["row_block"], h["cg_max_iter"], amg=h["preconditioner"] == "block_amg"))
    return PartitionedHFModel(model, Partition(model.disc, comm, m.block_size), solver), times, cfg.load_factors(times)


def _temperature_field(cfg: Config, temperature: Temperature, disc):
    """The callable ``T(x, t)`` of a temperature block on the discretisation ``disc``."""
    from sciml.solvers.rom import ExpressionTemperature, NodalTemperature, hot_spot, read_temperature_table

    if temperature.type == "hot_spot":
        return hot_spot(temperature.centre, temperature.peak, temperature.radius, cfg.loading.ramp_time)
    if temperature.type == "expression":
        return ExpressionTemperature(temperature.value)
    return NodalTemperature(disc, *read_temperature_table(temperature.path, temperature.array))


class _Checkpoint:
    """The case's checkpoint: ``checkpoints/latest.pt`` (atomically, rank 0) after every HF step, every
    stage and every online step (``output.keep_checkpoints`` keeps each as ``step_*.pt``), and files
    it refers to, each written once.

    Keys of ``latest.pt``: ``hf`` (per HF run, ``steps`` done and their ``step_seconds``; the fields of
    each step, global arrays that any number of ranks resumes from, are in
    ``checkpoints/hf_<run>/step_<k>.pt``), ``build``, ``plain``, ``setup`` (the stages done, with their
    numbers), ``world_size`` and ``ranks``: per rank the name of its ROM state file and its online
    state. Each rank writes its :meth:`AdaptiveROM.state_dict` to ``checkpoints/rom_rank<r>/rev_<k>.pt``
    only when the ROM's revision changes (build, monitor points, enrichment, an update after an HF
    step) — the bases of each revision once, to ``bases_<i>.pt`` — and each full state of an HF step
    of the online run to ``hf_step_<k>.pt`` there, once; the online state in ``latest.pt`` is the
    small rest (reduced state, records, the pending reduced steps) with the HF states by step number.
    A ROM step between HF steps thus writes kilobytes, not the bases and cubature. A revision file no
    checkpoint refers to any more is removed after ``latest.pt`` has moved on (kept with
    ``keep_checkpoints``). The ROM stages resume on as many
    ranks as they were saved on.
    """

    def __init__(self, run, keep: bool) -> None:
        self.run, self.keep, self.comm = run, keep, run.comm
        ckpt = run.load_checkpoint() if run.resume else None
        self.state: dict[str, Any] = dict(ckpt["state"]) if ckpt is not None else {"hf": {}}
        if ("hf" not in self.state or "hf_partial" in self.state
                or any("steps" not in record for record in self.state["hf"].values())
                or any("rom_file" not in r for r in self.state.get("ranks") or [])):
            raise RuntimeError(f"{run.latest_checkpoint}: a checkpoint of an older version of the case "
                               f"(keys {sorted(self.state)}); start the run again with `sciml run`")
        if "ranks" in self.state and self.state["world_size"] != self.comm.size:
            raise RuntimeError(f"{run.latest_checkpoint}: the ROM stages were checkpointed on "
                               f"{self.state['world_size']} rank(s); resume them on as many, not {self.comm.size}")
        self.dir = Path(run.checkpoint_dir) / f"rom_rank{self.comm.rank:04d}"
        mine = self.state["ranks"][self.comm.rank] if "ranks" in self.state else None
        self.rom_file: str | None = mine["rom_file"] if mine else None
        self._bases_written = 0  # bases files in place (those of the checkpoint once :meth:`rom` read it)
        self._resumed_online: dict | None = mine["online"] if mine else None  # this rank's, as loaded
        self.hf_files: dict[int, str] = dict(mine["online"]["hf_files"]) if mine and mine["online"] else {}

    def _write(self, name: str, obj) -> str:
        save_arrays(self.dir / name, obj)
        return name

    def _read(self, name: str):
        path = self.dir / name
        if not path.is_file():
            raise RuntimeError(f"{path}: missing; {self.run.latest_checkpoint} refers to it")
        return load_arrays(path)

    def rom(self) -> dict | None:
        """This rank's checkpointed :meth:`AdaptiveROM.state_dict`, or None."""
        if self.rom_file is None:
            return None
        state = self._read(self.rom_file)
        self._bases_written = state.pop("history")
        history = [self._read(self._bases_file(i)) for i in range(self._bases_written)]
        return {**state, "bases": [b for b, _ in history], "p_bases": [p for _, p in history]}

    @staticmethod
    def _bases_file(i: int) -> str:
        return f"bases_{i:04d}.pt"

    def _write_rom(self, rom) -> str:
        """The ROM's state: the bases of each revision (``bases_<i>.pt``, kept for the replays of
        the reduced steps taken with them) each once, the rest to ``rev_<k>.pt``."""
        state = rom.state_dict()
        bases, p_bases = state.pop("bases"), state.pop("p_bases")
        for i in range(self._bases_written, len(bases)):
            self._write(self._bases_file(i), (bases[i], p_bases[i]))
        self._bases_written = len(bases)
        return self._write(f"rev_{rom.revision:04d}.pt", {**state, "history": len(bases)})

    def online(self, hf) -> "OnlineState | None":
        """This rank's online state in the checkpoint resumed from (``hf`` gives the initial state), or None."""
        from sciml.solvers.rom import OnlineState

        mine = self._resumed_online
        if mine is None:
            return None
        hf_states = {k: self._read(name) for k, name in mine["hf_files"].items()}
        sync = hf.initial_state(0.0) if mine["sync"] is None else hf_states[mine["sync"]]
        return OnlineState(mine["step"], sync, mine["pending"], mine["rstate"], mine["records"], hf_states)

    def save(self, step: int, rom=None, online=None) -> None:
        """Checkpoint as step ``step``, with every rank's ROM and online state when given (collective)."""
        if rom is not None:
            previous = self.rom_file
            if f"rev_{rom.revision:04d}.pt" != previous:
                self.rom_file = self._write_rom(rom)
            mine = {"rom_file": self.rom_file, "online": None if online is None else self._online(online)}
            ranks = self.comm.gather(mine)
            self.state.update(world_size=self.comm.size, ranks=ranks)  # (None but on rank 0, which writes)
            self.comm.barrier()  # every rank's files are in place before latest.pt refers to them
        self.run.save_checkpoint(self.state, step=step, keep=self.keep)
        if rom is not None:
            self.comm.barrier()
            if previous is not None and previous != self.rom_file and not self.keep:
                (self.dir / previous).unlink(missing_ok=True)

    def _online(self, online) -> dict:
        for k, state in online.hf_states.items():
            if k not in self.hf_files:
                self.hf_files[k] = self._write(f"hf_step_{k + 1:05d}.pt", state)
        sync = next((k for k, state in online.hf_states.items() if state is online.sync), None)
        if sync is None and online.hf_states:
            raise RuntimeError("online state: the synchronised state is none of the run's HF states")
        return {"step": online.step, "sync": sync, "pending": online.pending, "rstate": online.rstate,
                "records": online.records, "hf_files": {k: self.hf_files[k] for k in online.hf_states}}

    def save_hf_step(self, name: str, k: int, fields: dict[str, np.ndarray]) -> None:
        """Write the global fields of step ``k`` (1-based) of HF run ``name`` (rank 0, atomically)."""
        if self.comm.is_root:
            save_arrays(hf_step_file(self.run.checkpoint_dir, name, k), fields)
        self.comm.barrier()


def hf_step_file(checkpoint_dir, name: str, k: int):
    """``checkpoints/hf_<name>/step_<k>.pt``: the global fields after step ``k`` (1-based) of HF run ``name``."""
    return Path(checkpoint_dir) / f"hf_{name}" / f"step_{k:05d}.pt"


def load_hf_step(checkpoint_dir, name: str, k: int) -> dict[str, np.ndarray]:
    """The fields ``u``, ``sigma``, ``p``, ``eps_p`` (global arrays) after step ``k`` of HF run ``name``."""
    path = hf_step_file(checkpoint_dir, name, k)
    if not path.is_file():
        raise RuntimeError(f"{path}: missing; the checkpoint records {k} or more steps of HF run {name!r}")
    return load_arrays(path)


def load_hf_history(checkpoint_dir, name: str, n_steps: int) -> dict[str, np.ndarray]:
    """Steps ``1..n_steps`` of HF run ``name`` stacked: ``u (n_dof, n)``, ``sigma (n_qp, 6, n)``, ``p (n_qp, n)``."""
    steps = [load_hf_step(checkpoint_dir, name, k) for k in range(1, n_steps + 1)]
    return {"u": np.column_stack([s["u"] for s in steps]), "sigma": np.stack([s["sigma"] for s in steps], axis=2),
            "p": np.column_stack([s["p"] for s in steps])}


def _hf_history(hf, times, lf, run, name: str, ckpt: _Checkpoint, step0: int) -> dict[str, Any]:
    """HF run: ``u (n_dof, n)``, local ``sigma (n_local, 6, n)``, ``p (n_local, n)``, ``seconds``,
    ``step_seconds`` (per step, max over ranks; ``seconds`` is their sum).

    Every step writes its global fields to their own file and checkpoints (as step ``step0 + k``)
    the count, so that ``sciml resume`` continues the run from its last step, on any number of ranks.
    """
    from sciml.solvers.rom import HFState, MaterialState

    part = hf.partition
    record = ckpt.state["hf"].setdefault(name, {"steps": 0, "step_seconds": []})
    k0, n = record["steps"], len(times)
    if k0 == n:
        run.log(f"HF {name}: read from the checkpoint")
    else:
        if k0 > 0:
            last = load_hf_step(run.checkpoint_dir, name, k0)
            state = HFState(float(times[k0 - 1]), last["u"], MaterialState(last["eps_p"][part.points],
                            last["p"][part.points]), last["sigma"][part.points])
            run.log(f"HF {name}: resumed after step {k0}/{n}")
        else:
            state = hf.initial_state(0.0)
        steps = list(zip(times.tolist(), lf.tolist()))[k0:]
        for k, (t, lam) in enumerate(run.progress(steps, total=n, desc=f"HF {name}", initial=k0), k0 + 1):
            t0 = time.process_time()
            state = hf.solve_step(state, t, lam).state
            seconds = part.comm.allreduce_max(time.process_time() - t0)
            ckpt.save_hf_step(name, k, {"u": state.u, "sigma": part.gather_points(state.sigma),
                                        "p": part.gather_points(state.p),
                                        "eps_p": part.gather_points(state.material.eps_p)})
            record.update(steps=k, step_seconds=record["step_seconds"] + [seconds])
            ckpt.save(step0 + k)
    g = load_hf_history(run.checkpoint_dir, name, n)
    return {"u": g["u"], "sigma": g["sigma"][part.points], "p": g["p"][part.points],
            "seconds": float(sum(record["step_seconds"])), "step_seconds": record["step_seconds"]}


def _errors(rom, rom_run, ref: dict, uspace, pspace, p_floor: float) -> dict[str, Any]:
    """Per-step relative errors of a ROM run against the reference: accepted ``u``,
    reduced predictions ``u_pred``, replayed ``p`` and Gappy ``p_gappy`` (NaN where the
    reference's max p is at most ``p_floor``: elastic steps, as for the indicator);
    and the full ``states``. One Gram matrix per quantity (few collective calls under MPI)."""
    states = list(rom.reconstruct(rom_run))
    U = np.column_stack([s.u for s in states])
    U_pred = np.column_stack([rom.prediction(rom_run, rec) for rec in rom_run.records])
    P = np.column_stack([s.p for s in states])
    P_gappy = np.column_stack([rom.p_reconstruction(rom_run, rec, s) for rec, s in zip(rom_run.records, states)])

    def rel(space, A, R):
        both = space.gram(np.hstack([A - R, R]), np.hstack([A - R, R]))
        n = A.shape[1]
        num, den = np.sqrt(np.maximum(np.diag(both)[:n], 0.0)), np.sqrt(np.maximum(np.diag(both)[n:], 0.0))
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    plastic = np.array([pspace.partition.comm.allreduce_max(float(np.max(ref["p"][:, k], initial=0.0)))
                        for k in range(U.shape[1])]) > p_floor
    return {"u": rel(uspace, U, ref["u"]), "u_pred": rel(uspace, U_pred, ref["u"]),
            "p": np.where(plastic, rel(pspace, P, ref["p"]), np.nan),
            "p_gappy": np.where(plastic, rel(pspace, P_gappy, ref["p"]), np.nan), "states": states}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------- the case
def run(cfg: Config, run) -> dict:
    """Run the case in ``run`` (a :class:`sciml.runs.Run`); returns the metrics."""
    from sciml.solvers.rom import (AdaptiveROM, DofSpace, PointSpace, Snapshots, Tolerances,
                                   distinct_temperature_times, monitor_points, thermoelastic_snapshots)

    comm = run.comm
    r = cfg.rom
    comm.barrier()  # ranks start their clocks together
    hf_train, times, lf = hf_model(cfg, cfg.training, comm)
    hf_new, _, _ = hf_model(cfg, cfg.online, comm)
    part = hf_new.partition
    m = cfg.mesh
    body = m.describe()
    run.log(f"{body} ({cfg.hf.linear_solver} HF solve): {hf_new.disc.n_dof} dofs, {hf_new.disc.n_qp} integration "
            f"points, {part.n_blocks} blocks of {cfg.mesh.block_size} cells on {comm.size} rank(s)")

    ckpt = _Checkpoint(run, cfg.output.keep_checkpoints)
    n = len(times)
    train = _hf_history(hf_train, times, lf, run, "training", ckpt, 0)
    ref = _hf_history(hf_new, times, lf, run, "reference", ckpt, n)
    run.log(f"HF runs: training {train['seconds']:.2f} s, reference {ref['seconds']:.2f} s")

    # offline ROM: checkpoint step 2n + 1
    if "build" in ckpt.state:
        try:
            rom = AdaptiveROM.from_state_dict(hf_new, ckpt.rom())
        except ValueError as exc:
            raise RuntimeError(f"{run.latest_checkpoint}: {exc}; start the run again with `sciml run`") from None
        run.log("offline ROM: read from the checkpoint")
    else:
        tol = Tolerances(pod=r.pod_tol, ecm=r.ecm_tol, gappy=r.gappy_tol, indicator=r.indicator_tol,
                         p_floor=r.p_floor, max_modes=r.max_modes)
        t0 = time.process_time()
        rom = AdaptiveROM(hf_new, Snapshots(train["u"], train["sigma"], train["p"]), tol, ecm_batch=r.ecm_batch,
                          tangent_snapshots=r.tangent_snapshots)
        ckpt.state["build"] = {"seconds": comm.allreduce_max(time.process_time() - t0), "n_modes": rom.n_modes,
                               "n_ecm_points": rom.ecm_result.n_points}
        ckpt.save(2 * n + 1, rom)
        run.log(f"offline ROM: {rom.n_modes} modes, {rom.ecm_result.n_points} ECM points (residual "
                f"{rom.ecm_result.residual:.2e}), {rom.p_basis.n_modes} p modes, {rom.qdeim_points.size} QDEIM "
                f"points; {ckpt.state['build']['seconds']:.2f} s")
    build_s, n_modes0, n_ecm0 = (ckpt.state["build"][k] for k in ("seconds", "n_modes", "n_ecm_points"))
    uspace, pspace = DofSpace(part), PointSpace(part)

    # plain ROM: step 2n + 2
    if "plain" not in ckpt.state:
        plain = rom.run(times, lf, adaptive=False)
        err = _errors(rom, plain, ref, uspace, pspace, r.p_floor)
        ckpt.state["plain"] = {"err": {k: v for k, v in err.items() if k != "states"},
                               "indicator": np.array([rec.indicator for rec in plain.records])}
        ckpt.save(2 * n + 2, rom)
    err_plain, indicator_plain = ckpt.state["plain"]["err"], ckpt.state["plain"]["indicator"]

    # online: everything from here on counts in the adaptive ROM's time. Setup and enriched ROM: step 2n + 3
    if "setup" not in ckpt.state:
        t0 = time.process_time()
        rom.add_monitor_points(monitor_points(hf_new, times, r.monitor_points))
        levels = distinct_temperature_times(hf_new, times, r.thermoelastic_levels)
        if levels:
            rom.enrich(*thermoelastic_snapshots(hf_new, levels))
        setup_s = comm.allreduce_max(time.process_time() - t0)
        run.log(f"online setup: {rom.monitor.size} monitor points, thermo-elastic enrichment at t = {levels} "
                f"-> {rom.n_modes} modes, {rom.ecm_result.n_points} ECM points; {setup_s:.2f} s")
        enriched = rom.run(times, lf, adaptive=False)
        err = _errors(rom, enriched, ref, uspace, pspace, r.p_floor)
        ckpt.state["setup"] = {"seconds": setup_s, "err": {k: v for k, v in err.items() if k != "states"}}
        ckpt.save(2 * n + 3, rom)
    setup_s, err_enriched = ckpt.state["setup"]["seconds"], ckpt.state["setup"]["err"]

    # adaptive ROM: step 2n + 3 + k after its step k
    start = ckpt.online(hf_new)
    if start is not None:
        run.log(f"adaptive ROM: resumed after step {start.step}/{n}")
    adaptive = rom.run(times, lf, adaptive=True, log=run.log, start=start,
                       on_step=lambda st: ckpt.save(2 * n + 3 + st.step, rom, st))
    err = _errors(rom, adaptive, ref, uspace, pspace, r.p_floor)

    secs = {k: comm.allreduce_max(adaptive.seconds(k)) for k in ("rom", "replay", "hf", "update")}
    online_s = setup_s + sum(secs.values())
    rom_steps = [rec.seconds["rom"] for rec in adaptive.records if not rec.hf]
    rom_step_s = comm.allreduce_max(float(np.mean(rom_steps))) if rom_steps else float("nan")
    hf_step_s = float(np.mean(ref["step_seconds"]))
    indicator = np.array([rec.indicator for rec in adaptive.records])

    metrics: dict[str, Any] = {
        "max_rel_error_u": float(err["u"].max()),
        "max_rel_error_p": _max_defined(err["p"]),
        "max_rel_error_p_gappy": _max_defined(err["p_gappy"]),
        "max_rel_error_u_nonadaptive": float(err_plain["u"].max()),
        "max_rel_error_p_nonadaptive": _max_defined(err_plain["p"]),
        "max_rel_error_u_enriched_nonadaptive": float(err_enriched["u"].max()),
        "hf_steps_used": len(adaptive.hf_steps),
        "hf_steps": [k + 1 for k in adaptive.hf_steps],
        "n_steps": len(times),
        "n_modes": rom.n_modes,
        "n_modes_offline": n_modes0,
        "n_ecm_points": rom.ecm_result.n_points,
        "n_ecm_points_offline": n_ecm0,
        "n_reduced_points": rom.model.n_points,
        "n_integration_points": hf_new.disc.n_qp,
        "n_dof": hf_new.disc.n_dof,
        "indicator_error_spearman": _spearman(indicator, err["u_pred"]),
        "indicator_error_spearman_nonadaptive": _spearman(indicator_plain, err_plain["u"]),
        "speedup_online_step": hf_step_s / rom_step_s,
        "speedup_online_total": ref["seconds"] / online_s,
        "hf_s": ref["seconds"],
        "online_s": online_s,
        "online_parts_s": {"setup": setup_s, **secs},
        "offline_s": train["seconds"] + build_s,
        "offline_build_s": build_s,
        "world_size": comm.size,
    }
    run.log(f"adaptive ROM: {metrics['hf_steps_used']}/{len(times)} HF steps, max error u "
            f"{metrics['max_rel_error_u']:.3e} (plain ROM {metrics['max_rel_error_u_nonadaptive']:.3e}), "
            f"speed-up {metrics['speedup_online_total']:.2f} (per ROM step {metrics['speedup_online_step']:.1f})")

    if cfg.output.paraview:
        _paraview(run, hf_new, rom, adaptive, err, ref)
    if cfg.output.plots and comm.is_root:
        _plot(run, cfg, indicator, err, err_plain, adaptive)
    return metrics


def _paraview(run, hf, rom, rom_run, err, ref) -> None:
    """Fields of every step on this rank's cells: u (ROM, HF), p and stress (cell averages), temperature;
    the global node and cell numbers as ParaView's global ids (the pieces share rank-boundary nodes)."""
    from sciml.meshes.paraview import UnstructuredMesh, VTKFile

    part, disc = hf.partition, hf.disc
    nodes, local_cells = np.unique(disc.cells[part.cells], return_inverse=True)
    mesh = UnstructuredMesh(disc.points[nodes], local_cells.reshape(-1, disc.cells.shape[1]).astype(np.int64),
                            disc.kind)
    nq = disc.n_qp_cell
    dim = disc.dim
    r2 = np.sqrt(0.5)
    vtk = VTKFile(run.path / "fields.pvd", comm=part.comm)

    def cells(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, nq, *a.shape[1:]).mean(axis=1)

    for rec, state in zip(rom_run.records, err["states"]):
        k = rec.step
        s = cells(state.sigma)
        sym = np.column_stack([s[:, 0], s[:, 1], s[:, 2], r2 * s[:, 5], r2 * s[:, 3], r2 * s[:, 4]])
        T = np.asarray(hf.model.temperature(disc.points[nodes], rec.t), dtype=np.float64)
        vtk.write(rec.t, mesh,
                  point_data={"u_rom": state.u.reshape(-1, dim)[nodes], "u_hf": ref["u"][:, k].reshape(-1, dim)[nodes],
                              "temperature": T, "GlobalNodeIds": nodes.astype(np.int64)},
                  cell_data={"p_rom": cells(state.p), "p_hf": cells(ref["p"][:, k]), "stress_rom": sym,
                             "hf_step": np.full(part.cells.size, float(rec.hf)),
                             "GlobalCellIds": np.asarray(part.cells, dtype=np.int64)})


def _plot(run, cfg: Config, indicator, err, err_plain, rom_run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(indicator) + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    ax.semilogy(steps, np.maximum(indicator, 1e-12), "o-", ms=3, label="indicator E (reduced prediction)")
    ax.semilogy(steps, np.maximum(err["u_pred"], 1e-16), "s-", ms=3, label="true error of the prediction (u, M-norm)")
    ax.semilogy(steps, np.maximum(err["u"], 1e-16), "-", lw=1, label="true error after adaptation")
    ax.semilogy(steps, np.maximum(err_plain["u"], 1e-16), ":", label="plain POD-ECM ROM")
    ax.axhline(cfg.rom.indicator_tol, color="k", lw=0.8, ls="--", label="indicator threshold")
    for i, k in enumerate(rom_run.hf_steps):
        ax.axvline(k + 1, color="tab:red", lw=0.8, alpha=0.6, label="HF step" if i == 0 else None)
    ax.set_xlabel("time step")
    ax.set_ylabel("relative value")
    ax.set_title(f"adaptive ROM on the new loading ({len(rom_run.hf_steps)} HF steps)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run.plots_dir / "indicator_error.png")
    plt.close(fig)


def _max_defined(errors: np.ndarray) -> float:
    """Largest of the errors defined (p's are undefined, nan, where the HF run has no plastic strain);
    nan, written as null, when the whole run stays elastic."""
    defined = errors[~np.isnan(errors)]
    return float(defined.max()) if defined.size else float("nan")
