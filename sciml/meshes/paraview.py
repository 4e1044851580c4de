"""ParaView output: VTK XML pieces, parallel index files and time collections.

File formats (VTK XML, see "VTK File Formats" in the VTK documentation):

=========  ======================  ==========================================================
suffix     VTK XML type            content
=========  ======================  ==========================================================
``.vti``   ``ImageData``           uniform structured 2D/3D grid (``vtkXMLImageDataWriter``)
``.vtu``   ``UnstructuredGrid``    points + cells of one type (``vtkXMLUnstructuredGridWriter``)
``.pvtu``  ``PUnstructuredGrid``   index of ``.vtu`` pieces, one per MPI rank (no data)
``.pvti``  ``PImageData``          index of ``.vti`` pieces, each a block of a global grid
``.pvd``   ``Collection``          time series: one ``<DataSet timestep= file=>`` per step
=========  ======================  ==========================================================

Pieces are written by vtk's XML writers in binary appended mode, zlib-compressed,
with UInt64 block headers. The index files (``.pvtu``, ``.pvti``, ``.pvd``) are small
XML written here (pyvista has no writer for them).

:class:`VTKFile` lays files out as Firedrake's ``VTKFile`` does::

    out/fields.pvd                         the collection, written by rank 0 only
    out/fields/fields_0.vtu                serial: one file per step (.vti for grids)
    out/fields/fields_0.pvtu               MPI: one index per step ...
    out/fields/fields_0_0.vtu, _0_1.vtu    ... and one piece per rank

Array conventions
-----------------
A field is a numpy array or a torch tensor (moved to the CPU, detached). Its leading
axes index the points or cells: ``(P,)`` / ``(C,)`` on an unstructured mesh,
``(nx, ny)`` or ``(nx, ny, nz)`` on a grid, with the axis order (x, y, z). The trailing
axes give the kind, which is tagged so that ParaView offers the matching filters:

=====================  ===========  ==========  ======================================
trailing shape         kind         components  stored as
=====================  ===========  ==========  ======================================
``()``                 scalar       1           as is
``(2,)``, ``(3,)``     vector       3           2-vectors padded with a zero z
``(6,)``               sym. tensor  6           (xx, yy, zz, xy, yz, xz), VTK's order
``(2, 2)``, ``(3, 3)`` tensor       9           component ``3*i + j`` is ``T[i, j]``;
                                                2x2 padded with zeros to 3x3
=====================  ===========  ==========  ======================================

The first field of each kind becomes the active scalars / vectors / tensors of its
point or cell data; vector and tensor components are named (X, Y, Z; XX, XY, ...).
Dtypes are kept (float32 stays float32); booleans are stored as uint8. An integer
scalar named ``GlobalNodeIds`` (point data) or ``GlobalCellIds`` (cell data) is tagged
as the data's global ids instead: the pieces of a ``.pvtu`` share the points on rank
boundaries, and ParaView's ghost-cell and redistribution filters match them by these ids.

Examples
--------
>>> import tempfile, numpy as np
>>> out = tempfile.mkdtemp()
>>> grid = ImageGrid(shape=(8, 4), spacing=(0.5, 0.5))
>>> x, y = np.meshgrid(np.arange(8) * 0.5, np.arange(4) * 0.5, indexing="ij")
>>> f = VTKFile(f"{out}/fields.pvd")
>>> f.write(0.0, grid, p=x + y, u=np.stack([y, -x], axis=-1))
>>> f.write(0.1, grid, p=x - y, u=np.stack([-y, x], axis=-1))
>>> [e.file for e in PVDCollection(f"{out}/fields.pvd", append=True).entries]
['fields/fields_0.vti', 'fields/fields_1.vti']
"""

from __future__ import annotations

import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkImageData, vtkUnstructuredGrid
from vtkmodules.vtkIOXML import vtkXMLImageDataWriter, vtkXMLUnstructuredGridWriter

from sciml.parallel import Comm, SerialComm

__all__ = [
    "CELL_TYPES",
    "ImageGrid",
    "UnstructuredMesh",
    "write_vti",
    "write_vtu",
    "write_pvtu",
    "write_pvti",
    "PVDEntry",
    "read_pvd",
    "PVDCollection",
    "VTKFile",
]

#: Supported cell types: name -> (VTK cell type id, nodes per cell, smallest point dimension).
CELL_TYPES: dict[str, tuple[int, int, int]] = {
    "triangle": (5, 3, 2),  # VTK_TRIANGLE
    "quad": (9, 4, 2),  # VTK_QUAD
    "tetra": (10, 4, 3),  # VTK_TETRA
    "hexahedron": (12, 8, 3),  # VTK_HEXAHEDRON
}

_COMPONENT_NAMES = {
    3: ("X", "Y", "Z"),
    6: ("XX", "YY", "ZZ", "XY", "YZ", "XZ"),
    9: ("XX", "XY", "XZ", "YX", "YY", "YZ", "ZX", "ZY", "ZZ"),
}
_ATTRIBUTE_OF = {1: "Scalars", 3: "Vectors", 6: "Tensors", 9: "Tensors"}
#: ``name -> (dtype, number of components)`` of the arrays declared in a ``.pvtu``/``.pvti``.
ArraySpecs = Mapping[str, tuple[Any, int]]

_FIELD_SHAPES = "() scalar, (2,) or (3,) vector, (6,) symmetric tensor, (2, 2) or (3, 3) tensor"


# --------------------------------------------------------------------------- arrays


def _as_array(value: Any, what: str) -> np.ndarray:
    """``value`` (numpy array, torch tensor, nested list) as a native-endian numpy array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor; torch not imported
        try:
            value = value.detach().cpu().numpy()
        except TypeError as exc:
            raise ValueError(f"{what}: torch dtype {value.dtype} has no numpy equivalent; cast it "
                             f"to float32 or float64 first") from exc
    a = np.asarray(value)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if a.dtype.kind not in "iuf" or a.dtype == np.float16:
        raise ValueError(f"{what}: expected a real array of int, uint, float32 or float64 values, "
                         f"got dtype {a.dtype}")
    return a.astype(a.dtype.newbyteorder("="), copy=False)


def _vtk_layout(name: str, value: Any, lead_shape: tuple[int, ...], what: str) -> np.ndarray:
    """One field as a contiguous ``(n, components)`` array in VTK's point/cell order.

    ``lead_shape`` is ``(P,)``/``(C,)`` or the grid's ``(nx, ny[, nz])``; grid axes are
    reversed so that x runs fastest, as VTK numbers the points of an image.
    """
    a = _as_array(value, f"{what} {name!r}")
    n_lead = len(lead_shape)
    trailing = a.shape[n_lead:]
    if a.shape[:n_lead] != lead_shape or trailing not in {(), (2,), (3,), (6,), (2, 2), (3, 3)}:
        raise ValueError(f"{what} {name!r}: expected shape {lead_shape} followed by one of "
                         f"{_FIELD_SHAPES}; got {a.shape}")
    if trailing == ():
        a = a[..., None]
    elif trailing in {(2,), (2, 2)}:
        padded = np.zeros(lead_shape + (3,) * len(trailing), dtype=a.dtype)
        padded[(...,) + (slice(0, 2),) * len(trailing)] = a
        a = padded
    n_components = math.prod(a.shape[n_lead:])
    a = a.reshape(lead_shape + (n_components,))
    order = tuple(reversed(range(n_lead))) + (n_lead,)
    return np.ascontiguousarray(np.transpose(a, order).reshape(math.prod(lead_shape), n_components))


def _vtk_type_name(dtype: Any) -> str:
    """VTK XML type name (``Float32``, ``Int64``, ...) of a numpy dtype."""
    dt = np.dtype(dtype)
    if dt.kind not in "iuf" or dt.itemsize not in (1, 2, 4, 8) or dt == np.float16:
        raise ValueError(f"expected an int, uint, float32 or float64 dtype, got {dt}")
    return {"i": "Int", "u": "UInt", "f": "Float"}[dt.kind] + str(8 * dt.itemsize)


#: Names of the integer scalars tagged as global ids (not as the active scalars).
GLOBAL_ID_NAMES = ("GlobalNodeIds", "GlobalCellIds")


def _is_global_ids(name: str, dtype: Any, n_components: int) -> bool:
    return name in GLOBAL_ID_NAMES and n_components == 1 and np.dtype(dtype).kind in "iu"


def _add_arrays(attributes: Any, arrays: dict[str, np.ndarray]) -> None:
    """Add ``(n, c)`` arrays to vtkPointData/vtkCellData; tag the first of each kind (and global ids)."""
    tagged: set[str] = set()
    for name, flat in arrays.items():
        if _is_global_ids(name, flat.dtype, flat.shape[1]):
            ids = numpy_to_vtkIdTypeArray(np.ascontiguousarray(flat[:, 0], dtype=np.int64), deep=True)
            ids.SetName(name)
            attributes.SetGlobalIds(ids)
            continue
        vtk_array = numpy_to_vtk(flat)  # no copy: the caller keeps `flat` alive while writing
        vtk_array.SetName(name)
        for i, component in enumerate(_COMPONENT_NAMES.get(flat.shape[1], ())):
            vtk_array.SetComponentName(i, component)
        attributes.AddArray(vtk_array)
        kind = _ATTRIBUTE_OF.get(flat.shape[1])
        if kind is not None and kind not in tagged:
            getattr(attributes, f"SetActive{kind}")(name)
            tagged.add(kind)


def _array_specs(arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, int]]:
    """``name -> (dtype name, number of components)`` of ``(n, c)`` arrays."""
    return {name: (a.dtype.name, a.shape[1]) for name, a in arrays.items()}


def _check_names(data: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected a dict name -> array, got {type(data).__name__}")
    for name in data:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what}: field names must be non-empty strings, got {name!r}")
    return dict(data)


# --------------------------------------------------------------------------- meshes


def _floats(value: Any, what: str, lengths: Sequence[int], positive: bool = False) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a sequence of {' or '.join(map(str, lengths))} numbers, "
                         f"got {value!r}") from None
    if len(out) not in lengths:
        raise ValueError(f"{what}: expected {' or '.join(map(str, lengths))} numbers, got {len(out)}: {value!r}")
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        raise ValueError(f"{what}: expected finite{' positive' if positive else ''} numbers, got {value!r}")
    return out


class ImageGrid:
    """A uniform structured grid in 2D or 3D (VTK ``ImageData``, written as ``.vti``).

    Point ``(i, j[, k])`` of the grid sits at ``origin + spacing * (start + (i, j[, k]))``.

    Parameters
    ----------
    shape
        Points per axis ``(nx, ny)`` or ``(nx, ny, nz)``, axis order (x, y, z). Point
        fields have this leading shape; cell fields have ``max(n - 1, 1)`` per axis.
    spacing
        Grid step per axis, ``len(shape)`` positive numbers.
    origin
        Position of global grid index 0: ``len(shape)`` numbers, or 3 for a 2D grid
        placed in the plane ``z = origin[2]``. Default: zeros.
    start
        Global index of this grid's first point, ``len(shape)`` integers (default
        zeros). Under MPI each rank's block has its own ``start`` and all share
        ``origin`` and ``spacing``; neighbouring blocks share their boundary points
        (block ``[0, 8]`` and block ``[8, 16]``), or ParaView shows a gap.
    """

    def __init__(self, shape: Sequence[int], spacing: Sequence[float], origin: Sequence[float] | None = None,
                 start: Sequence[int] | None = None) -> None:
        shape = tuple(shape)
        if len(shape) not in (2, 3) or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
            raise ValueError(f"ImageGrid: expected shape (nx, ny) or (nx, ny, nz) of positive ints, got {shape}")
        self.shape: tuple[int, ...] = tuple(int(n) for n in shape)
        self.dim = len(shape)
        self.spacing = _floats(spacing, "ImageGrid spacing", [self.dim], positive=True)
        origin = _floats((0.0,) * self.dim if origin is None else origin, "ImageGrid origin",
                         [self.dim, 3] if self.dim == 2 else [3])
        self.origin: tuple[float, ...] = origin + (0.0,) * (3 - len(origin))
        start = (0,) * self.dim if start is None else tuple(start)
        if len(start) != self.dim or not all(isinstance(s, (int, np.integer)) for s in start):
            raise ValueError(f"ImageGrid start: expected {self.dim} ints, got {start}")
        self.start: tuple[int, ...] = tuple(int(s) for s in start)

    @property
    def point_shape(self) -> tuple[int, ...]:
        """Leading shape of a point field: ``(nx, ny[, nz])``."""
        return self.shape

    @property
    def cell_shape(self) -> tuple[int, ...]:
        """Leading shape of a cell field: ``max(n - 1, 1)`` per axis."""
        return tuple(max(n - 1, 1) for n in self.shape)

    @property
    def extent(self) -> tuple[int, ...]:
        """VTK extent ``(x0, x1, y0, y1, z0, z1)`` of this block in global indices."""
        ext = []
        for s, n in zip(self.start + (0,) * (3 - self.dim), self.shape + (1,) * (3 - self.dim)):
            ext += [s, s + n - 1]
        return tuple(ext)

    def __repr__(self) -> str:
        return f"ImageGrid(shape={self.shape}, spacing={self.spacing}, origin={self.origin}, start={self.start})"


class UnstructuredMesh:
    """A finite-element mesh of one cell type (VTK ``UnstructuredGrid``, written as ``.vtu``).

    Parameters
    ----------
    points
        Node coordinates, ``(P, 2)`` or ``(P, 3)``; 2D points get ``z = 0``. float32
        and float64 are kept, integers become float64.
    cells
        Node indices per cell, ``(C, k)`` integers in ``[0, P)``, in VTK's node order:

        - ``'triangle'`` (k = 3): counter-clockwise in the xy-plane.
        - ``'quad'`` (k = 4): around the boundary, counter-clockwise; the unit square is
          ``(0,0), (1,0), (1,1), (0,1)`` (not the tensor-product order).
        - ``'tetra'`` (k = 4): ``3`` lies on the side that ``(p1-p0) x (p2-p0)`` points
          to (positive volume); needs 3D points.
        - ``'hexahedron'`` (k = 8): ``0-3`` around the bottom face, counter-clockwise
          seen from the top face, ``4-7`` the top face with node ``i + 4`` above node
          ``i``; the unit cube is ``(0,0,0), (1,0,0), (1,1,0), (0,1,0), (0,0,1),
          (1,0,1), (1,1,1), (0,1,1)``. Needs 3D points.
    cell_type
        One of :data:`CELL_TYPES`: ``'triangle'``, ``'quad'``, ``'tetra'``, ``'hexahedron'``.
    """

    def __init__(self, points: Any, cells: Any, cell_type: str) -> None:
        if cell_type not in CELL_TYPES:
            raise ValueError(f"UnstructuredMesh: expected cell_type one of {sorted(CELL_TYPES)}, got {cell_type!r}")
        self.cell_type = cell_type
        self.vtk_type, nodes, min_dim = CELL_TYPES[cell_type]
        p = _as_array(points, "UnstructuredMesh points")
        if p.ndim != 2 or p.shape[1] not in (2, 3):
            raise ValueError(f"UnstructuredMesh: expected points of shape (P, 2) or (P, 3), got {p.shape}")
        if p.shape[1] < min_dim:
            raise ValueError(f"UnstructuredMesh: cell_type {cell_type!r} needs points of shape (P, {min_dim}), "
                             f"got {p.shape}")
        if p.dtype.kind != "f":
            p = p.astype(np.float64)
        self.dim = p.shape[1]
        self.points: np.ndarray = np.zeros((p.shape[0], 3), dtype=p.dtype)
        self.points[:, : self.dim] = p
        c = _as_array(cells, "UnstructuredMesh cells")
        if c.ndim != 2 or c.shape[1] != nodes or c.dtype.kind not in "iu":
            raise ValueError(f"UnstructuredMesh: expected cells of shape (C, {nodes}) with integer entries for "
                             f"{cell_type!r}, got shape {c.shape} of dtype {c.dtype}")
        if c.size and (c.min() < 0 or c.max() >= len(self.points)):
            raise ValueError(f"UnstructuredMesh: expected cell node indices in [0, {len(self.points)}), "
                             f"got indices from {c.min()} to {c.max()}")
        self.cells: np.ndarray = c.astype(np.int64)

    @property
    def point_shape(self) -> tuple[int]:
        """Leading shape of a point field: ``(P,)``."""
        return (len(self.points),)

    @property
    def cell_shape(self) -> tuple[int]:
        """Leading shape of a cell field: ``(C,)``."""
        return (len(self.cells),)

    def __repr__(self) -> str:
        return (f"UnstructuredMesh({len(self.points)} points in {self.dim}D, "
                f"{len(self.cells)} {self.cell_type} cells)")


# --------------------------------------------------------------------------- pieces


def _check_suffix(path: str | os.PathLike, suffix: str) -> Path:
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"expected a path ending in {suffix}, got {str(path)!r}")
    return path


def _write_xml(writer: Any, data: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.SetFileName(str(path))
    writer.SetInputData(data)
    writer.SetDataModeToAppended()
    writer.EncodeAppendedDataOff()
    writer.SetCompressorTypeToZLib()
    writer.SetHeaderTypeToUInt64()
    if writer.Write() != 1:
        raise OSError(f"vtk could not write {path}")


def _fields(grid: ImageGrid | UnstructuredMesh, point_data: Mapping[str, Any] | None,
            cell_data: Mapping[str, Any] | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Point and cell fields checked against ``grid`` and laid out as ``(n, c)`` arrays."""
    points = {name: _vtk_layout(name, v, grid.point_shape, "point field")
              for name, v in _check_names(point_data, "point_data").items()}
    cells = {name: _vtk_layout(name, v, grid.cell_shape, "cell field")
             for name, v in _check_names(cell_data, "cell_data").items()}
    return points, cells


def _write_piece(path: Path, grid: ImageGrid | UnstructuredMesh, points: dict[str, np.ndarray],
                 cells: dict[str, np.ndarray]) -> None:
    if isinstance(grid, ImageGrid):
        data = vtkImageData()
        data.SetExtent(*grid.extent)
        data.SetOrigin(*grid.origin)
        data.SetSpacing(*(grid.spacing + (1.0,) * (3 - grid.dim)))
        writer = vtkXMLImageDataWriter()
    else:
        data = vtkUnstructuredGrid()
        vtk_points = vtkPoints()
        vtk_points.SetData(numpy_to_vtk(grid.points))
        data.SetPoints(vtk_points)
        n_cells, nodes = grid.cells.shape
        offsets = np.arange(0, n_cells * nodes + 1, nodes, dtype=np.int64)
        cell_array = vtkCellArray()
        cell_array.SetData(numpy_to_vtkIdTypeArray(offsets), numpy_to_vtkIdTypeArray(grid.cells.ravel()))
        data.SetCells(grid.vtk_type, cell_array)
        writer = vtkXMLUnstructuredGridWriter()
    _add_arrays(data.GetPointData(), points)
    _add_arrays(data.GetCellData(), cells)
    _write_xml(writer, data, path)  # vtk arrays share memory with numpy arrays alive until here


def write_vti(path: str | os.PathLike, point_data: Mapping[str, Any], *, spacing: Sequence[float],
              origin: Sequence[float] = (0.0, 0.0, 0.0), cell_data: Mapping[str, Any] | None = None,
              start: Sequence[int] | None = None) -> None:
    """Write fields on a uniform 2D or 3D grid to a ``.vti`` file (VTK XML ImageData).

    Parameters
    ----------
    path
        Output file, ending in ``.vti``; missing parent folders are created.
    point_data
        ``name -> array`` of shape ``(nx, ny[, nz])`` + a field shape (module docstring);
        index order (x, y, z): ``f[i, j, k]`` is the value at
        ``origin + spacing * (i, j, k)``. The grid shape is read from these arrays.
    spacing
        Grid step per axis; its length (2 or 3) sets the dimension of the grid.
    origin
        Position of grid index 0 (3 numbers, or 2 for a 2D grid).
    cell_data
        ``name -> array`` of shape ``(nx-1, ny-1[, nz-1])`` + a field shape.
    start
        Global index of the first point (a block of a larger grid, see :func:`write_pvti`).
    """
    path = _check_suffix(path, ".vti")
    dim = len(_floats(spacing, "write_vti spacing", [2, 3], positive=True))
    point_data, cell_data = _check_names(point_data, "point_data"), _check_names(cell_data, "cell_data")
    if point_data:
        shape = np.shape(next(iter(point_data.values())))[:dim]
    elif cell_data:
        shape = tuple(n + 1 for n in np.shape(next(iter(cell_data.values())))[:dim])
    else:
        raise ValueError("write_vti: expected at least one field in point_data or cell_data, got none")
    if len(shape) != dim:
        raise ValueError(f"write_vti: spacing has {dim} entries, so fields need {dim} grid axes; "
                         f"got a field of shape {shape}")
    grid = ImageGrid(shape, spacing, origin, start)
    _write_piece(path, grid, *_fields(grid, point_data, cell_data))


def write_vtu(path: str | os.PathLike, points: Any, cells: Any, cell_type: str,
              point_data: Mapping[str, Any] | None = None, cell_data: Mapping[str, Any] | None = None) -> None:
    """Write fields on an unstructured mesh to a ``.vtu`` file (VTK XML UnstructuredGrid).

    Parameters
    ----------
    path
        Output file, ending in ``.vtu``; missing parent folders are created.
    points, cells, cell_type
        The mesh: ``(P, 2|3)`` coordinates, ``(C, k)`` node indices in VTK node order,
        and one of ``'triangle'``, ``'quad'``, ``'tetra'``, ``'hexahedron'``
        (see :class:`UnstructuredMesh`).
    point_data
        ``name -> array`` of shape ``(P,)``, ``(P, 3)``, ``(P, 3, 3)``, ... (module docstring).
    cell_data
        ``name -> array`` of shape ``(C,)``, ``(C, 3)``, ``(C, 3, 3)``, ...
    """
    path = _check_suffix(path, ".vtu")
    mesh = UnstructuredMesh(points, cells, cell_type)
    _write_piece(path, mesh, *_fields(mesh, point_data, cell_data))


# --------------------------------------------------------------------------- index files


def _write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _xml_text(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _vtk_root(file_type: str) -> ET.Element:
    byte_order = "LittleEndian" if sys.byteorder == "little" else "BigEndian"
    return ET.Element("VTKFile", type=file_type, version="1.0", byte_order=byte_order, header_type="UInt64")


def _relative(file: str | os.PathLike, what: str) -> str:
    file_str = Path(file).as_posix()
    if not file_str or file_str == "." or Path(file).is_absolute():
        raise ValueError(f"{what}: expected a path relative to the index file's folder, got {str(file)!r}")
    return file_str


def _p_arrays(parent: ET.Element, tag: str, specs: ArraySpecs | None) -> None:
    """``<PPointData>``/``<PCellData>`` with one ``<PDataArray>`` per spec, first of each kind tagged."""
    element = ET.SubElement(parent, tag)
    for name, spec in _check_names(specs, tag).items():
        try:
            dtype, n_components = spec
            n_components = int(n_components)
        except (TypeError, ValueError):
            raise ValueError(f"{tag} {name!r}: expected (dtype, number of components), got {spec!r}") from None
        if n_components < 1:
            raise ValueError(f"{tag} {name!r}: expected a positive number of components, got {n_components}")
        try:
            type_name = _vtk_type_name(dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{tag} {name!r}: {exc}") from None
        if _is_global_ids(name, dtype, n_components):
            element.set("GlobalIds", name)
            type_name = "Int64"  # what the pieces hold (vtkIdType)
        else:
            kind = _ATTRIBUTE_OF.get(n_components)
            if kind is not None and kind not in element.attrib:
                element.set(kind, name)
        array = ET.SubElement(element, "PDataArray", type=type_name, Name=name,
                              NumberOfComponents=str(n_components))
        if element.get("GlobalIds") == name:
            # vtkIdType, as in the pieces: read as Int64 instead, ParaView's ghost-cell generator crashes on it
            array.set("IdType", "1")
        for i, component in enumerate(_COMPONENT_NAMES.get(n_components, ())):
            array.set(f"ComponentName{i}", component)


def write_pvtu(path: str | os.PathLike, pieces: Sequence[str], point_arrays: ArraySpecs | None = None,
               cell_arrays: ArraySpecs | None = None, *, points_dtype: Any = "float64") -> None:
    """Write a ``.pvtu`` index (VTK XML PUnstructuredGrid) over ``.vtu`` pieces.

    The file holds no data: it declares the arrays every piece carries and lists the
    pieces; ParaView reads them as one mesh.

    Parameters
    ----------
    path
        Output file, ending in ``.pvtu``.
    pieces
        Piece files relative to the folder of ``path``, typically one per MPI rank.
    point_arrays, cell_arrays
        ``name -> (dtype, number of components)`` of the arrays in each piece, in the
        pieces' order, e.g. ``{"p": ("float64", 1), "u": ("float64", 3)}``. Components
        as stored: 3 for 2- and 3-vectors, 6 for symmetric, 9 for 2x2 and 3x3 tensors.
    points_dtype
        dtype of the pieces' point coordinates (float32 or float64).
    """
    path = _check_suffix(path, ".pvtu")
    if isinstance(pieces, (str, os.PathLike)) or not pieces:
        raise ValueError(f"write_pvtu: expected a non-empty list of piece files, got {pieces!r}")
    sources = [_relative(piece, "write_pvtu piece") for piece in pieces]
    root = _vtk_root("PUnstructuredGrid")
    grid = ET.SubElement(root, "PUnstructuredGrid", GhostLevel="0")
    _p_arrays(grid, "PPointData", point_arrays)
    _p_arrays(grid, "PCellData", cell_arrays)
    ET.SubElement(ET.SubElement(grid, "PPoints"), "PDataArray", type=_vtk_type_name(points_dtype),
                  Name="Points", NumberOfComponents="3")
    for source in sources:
        ET.SubElement(grid, "Piece", Source=source)
    _write_text_atomically(path, _xml_text(root))


def write_pvti(path: str | os.PathLike, pieces: Sequence[tuple[str, Sequence[int]]], *, spacing: Sequence[float],
               origin: Sequence[float] = (0.0, 0.0, 0.0), point_arrays: ArraySpecs | None = None,
               cell_arrays: ArraySpecs | None = None) -> None:
    """Write a ``.pvti`` index (VTK XML PImageData) over ``.vti`` blocks of one grid.

    Parameters
    ----------
    path
        Output file, ending in ``.pvti``.
    pieces
        ``(file, extent)`` per block: the ``.vti`` file relative to the folder of ``path``
        and its VTK extent ``(x0, x1, y0, y1, z0, z1)`` in global point indices
        (:attr:`ImageGrid.extent`). The whole extent is their bounding box.
    spacing, origin
        Of the global grid, as for :func:`write_vti`.
    point_arrays, cell_arrays
        ``name -> (dtype, number of components)``, as for :func:`write_pvtu`.
    """
    path = _check_suffix(path, ".pvti")
    spacing = _floats(spacing, "write_pvti spacing", [2, 3], positive=True)
    origin = _floats(origin, "write_pvti origin", [2, 3])
    if isinstance(pieces, (str, os.PathLike)) or not pieces:
        raise ValueError(f"write_pvti: expected a non-empty list of (file, extent), got {pieces!r}")
    extents = []
    for piece in pieces:
        try:
            file, extent = piece
            extent = tuple(int(e) for e in extent)
        except (TypeError, ValueError):
            raise ValueError(f"write_pvti: expected pieces as (file, (x0, x1, y0, y1, z0, z1)), "
                             f"got {piece!r}") from None
        if len(extent) != 6 or any(extent[2 * a] > extent[2 * a + 1] for a in range(3)):
            raise ValueError(f"write_pvti: expected an extent (x0, x1, y0, y1, z0, z1) with x0 <= x1 etc., "
                             f"got {extent} for {file!r}")
        extents.append((_relative(file, "write_pvti piece"), extent))
    whole = [min(e[a] for _, e in extents) if a % 2 == 0 else max(e[a] for _, e in extents) for a in range(6)]
    root = _vtk_root("PImageData")
    image = ET.SubElement(root, "PImageData", WholeExtent=" ".join(map(str, whole)), GhostLevel="0",
                          Origin=" ".join(map(repr, origin + (0.0,) * (3 - len(origin)))),
                          Spacing=" ".join(map(repr, spacing + (1.0,) * (3 - len(spacing)))),
                          Direction="1 0 0 0 1 0 0 0 1")
    _p_arrays(image, "PPointData", point_arrays)
    _p_arrays(image, "PCellData", cell_arrays)
    for file, extent in extents:
        ET.SubElement(image, "Piece", Extent=" ".join(map(str, extent)), Source=file)
    _write_text_atomically(path, _xml_text(root))


# --------------------------------------------------------------------------- .pvd


class PVDEntry(NamedTuple):
    """One ``<DataSet>`` of a ``.pvd`` collection."""

    time: float
    file: str
    part: int = 0


def read_pvd(path: str | os.PathLike) -> tuple[PVDEntry, ...]:
    """The entries of a ``.pvd`` collection in file order (their files relative to its folder);
    ValueError says what is wrong with it."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .pvd file ({exc})") from None
    collection = root.find("Collection")
    if root.tag != "VTKFile" or root.get("type") != "Collection" or collection is None:
        raise ValueError(f"{path}: expected <VTKFile type=\"Collection\"><Collection>, "
                         f"got <{root.tag} type={root.get('type')!r}>")
    entries = []
    for element in collection.iter("DataSet"):
        try:
            entries.append(PVDEntry(float(element.get("timestep", "0")), element.attrib["file"],
                                    int(element.get("part", "0"))))
        except (KeyError, ValueError):
            raise ValueError(f"{path}: expected <DataSet timestep=... part=... file=...>, "
                             f"got {ET.tostring(element, encoding='unicode').strip()}") from None
    return tuple(entries)


class PVDCollection:
    """A ParaView time collection (``.pvd``: VTK XML ``Collection``), rewritten on every change.

    Each change rewrites the whole file through a temporary file and ``os.replace``,
    so a run killed at any moment leaves a valid collection of the steps completed.

    Parameters
    ----------
    path
        The ``.pvd`` file. Entries name their data files relative to its folder.
    append
        False: start an empty collection (an existing file is replaced at once).
        True: keep the entries of an existing file (a restarted run); start empty
        if there is none.

    Examples
    --------
    >>> import tempfile
    >>> pvd = PVDCollection(tempfile.mkdtemp() + "/run.pvd")
    >>> pvd.add(0.0, "run/run_0.vtu"); pvd.add(0.5, "run/run_1.vtu"); pvd.add(1.0, "run/run_2.vtu")
    >>> pvd.truncate_after(0.5)
    >>> [e.time for e in PVDCollection(pvd.path, append=True).entries]
    [0.0, 0.5]
    """

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        self.path = _check_suffix(path, ".pvd")
        self._entries: list[PVDEntry] = []
        if append and self.path.exists():
            self._entries = self._read()
        self._write()

    @property
    def entries(self) -> tuple[PVDEntry, ...]:
        """The collection's entries in file order."""
        return tuple(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, time: float, relative_file: str | os.PathLike, part: int = 0) -> None:
        """Add a dataset at ``time`` (strictly later than the last one of ``part``) and rewrite the file."""
        time = float(time)
        if not math.isfinite(time):
            raise ValueError(f"PVDCollection.add: expected a finite time, got {time}")
        if not isinstance(part, (int, np.integer)) or part < 0:
            raise ValueError(f"PVDCollection.add: expected part a non-negative int, got {part!r}")
        last = max((e.time for e in self._entries if e.part == part), default=-math.inf)
        if time <= last:
            raise ValueError(f"PVDCollection.add: expected a time later than the last one of part {part} "
                             f"({last!r}), got {time!r}; a restarted run calls truncate_after(t_restart) first")
        self._entries.append(PVDEntry(time, _relative(relative_file, "PVDCollection.add"), int(part)))
        self._write()

    def truncate_after(self, time: float) -> None:
        """Drop the entries later than ``time`` and rewrite the file (their data files stay on disk)."""
        time = float(time)
        if math.isnan(time):
            raise ValueError("PVDCollection.truncate_after: expected a time, got nan")
        self._entries = [e for e in self._entries if e.time <= time]
        self._write()

    def _read(self) -> list[PVDEntry]:
        return list(read_pvd(self.path))

    def _write(self) -> None:
        root = ET.Element("VTKFile", type="Collection", version="0.1",
                          byte_order="LittleEndian" if sys.byteorder == "little" else "BigEndian")
        collection = ET.SubElement(root, "Collection")
        for e in self._entries:
            ET.SubElement(collection, "DataSet", timestep=repr(e.time), group="", part=str(e.part), file=e.file)
        _write_text_atomically(self.path, _xml_text(root))


# --------------------------------------------------------------------------- VTKFile


class _FailedOnRank(RuntimeError):
    """A collective operation failed; the message names the rank(s) and their errors."""


def _on_root(comm: Comm, fn: Any) -> Any:
    """Run ``fn`` on rank 0 and broadcast its result; if it raises, every rank raises."""
    result, error, message = None, None, None
    if comm.rank == 0:
        try:
            result = fn()
        except Exception as exc:
            error = exc
            message = str(exc) if isinstance(exc, _FailedOnRank) else f"rank 0: {type(exc).__name__}: {exc}"
    if comm.size > 1:
        result, message = comm.bcast((result, message), root=0)
    if error is not None:
        raise error
    if message is not None:
        raise _FailedOnRank(message)
    return result


class VTKFile:
    """Time series output for ParaView: ``name.pvd`` + ``name/name_{k}.vti|vtu`` (+ ``.pvtu`` under MPI).

    Modelled on Firedrake's ``VTKFile``. Step ``k`` of a serial run writes
    ``name/name_{k}.vti`` (an :class:`ImageGrid`) or ``name/name_{k}.vtu`` (an
    :class:`UnstructuredMesh`). With a communicator of size > 1, each rank writes its
    own part ``name/name_{k}_{rank}.vtu`` (or ``.vti``, a block of the global grid
    placed by :attr:`ImageGrid.start`), and rank 0 writes the index
    ``name/name_{k}.pvtu`` (or ``.pvti``) and adds it to the ``.pvd``. Only rank 0
    touches the ``.pvd``. Every method is collective: if one rank fails, all raise.

    Parameters
    ----------
    path
        The collection file, ending in ``.pvd``.
    comm
        Communicator (:mod:`sciml.parallel`); default: serial.
    append
        Continue an existing collection (restart): its entries are kept and the step
        counter continues after the highest step in it. Call :meth:`truncate_after`
        with the checkpoint's time before writing the steps that follow it. If the
        ``.pvd`` itself is gone, the counter continues after the data files on disk
        (the new collection holds only the new steps, no earlier file is overwritten).
    """

    def __init__(self, path: str | os.PathLike, comm: Comm | None = None, append: bool = False) -> None:
        self.path = _check_suffix(path, ".pvd")
        self.name = self.path.stem
        self.folder = self.path.parent / self.name
        self.comm = SerialComm() if comm is None else comm
        self._pvd: PVDCollection | None = None

        self._floor = 0  # the lowest step index a write may use

        def open_collection() -> tuple[int, float]:
            if append and not self.path.exists():  # the index is gone, its data files may not be
                pattern = re.compile(rf"{re.escape(self.name)}_(\d+)(?:_\d+)?\.p?(?:vtu|vti)")
                on_disk = [int(m.group(1)) for f in self.folder.glob(f"{self.name}_*")
                           if (m := pattern.fullmatch(f.name))]
                self._floor = max(on_disk, default=-1) + 1
            self._pvd = PVDCollection(self.path, append=append)
            return self._position()

        self._step, self._last_time = _on_root(self.comm, open_collection)

    @property
    def step(self) -> int:
        """Index ``k`` that the next :meth:`write` uses."""
        return self._step

    def _position(self) -> tuple[int, float]:
        """Next step index and last time, from the collection's entries."""
        pattern = re.compile(rf"{re.escape(self.name)}/{re.escape(self.name)}_(\d+)\.p?(?:vtu|vti)")
        steps = [int(m.group(1)) for e in self._pvd.entries if (m := pattern.fullmatch(e.file))]
        return max(max(steps, default=-1) + 1, self._floor), max((e.time for e in self._pvd.entries),
                                                                  default=-math.inf)

    def truncate_after(self, time: float) -> None:
        """Drop steps later than ``time`` from the ``.pvd``; the next write reuses the first dropped index."""
        def truncate() -> tuple[int, float]:
            self._pvd.truncate_after(time)
            return self._position()

        self._step, self._last_time = _on_root(self.comm, truncate)

    def write(self, time: float, mesh: ImageGrid | UnstructuredMesh, *, point_data: Mapping[str, Any] | None = None,
              cell_data: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """Write one step: the fields on this rank's ``mesh`` at ``time``.

        Parameters
        ----------
        time
            Physical time of the step; later than the previous step's.
        mesh
            :class:`ImageGrid` or :class:`UnstructuredMesh` (this rank's part under MPI).
        point_data, cell_data
            Fields given explicitly as point or cell data.
        **fields
            Fields told apart by their leading shape: the mesh's points ``(P,)`` /
            ``(nx, ny[, nz])`` or its cells ``(C,)`` / ``(nx-1, ny-1[, nz-1])``. A field
            that matches both (as many points as cells) must go in ``point_data`` or
            ``cell_data``. Field shapes: see the module docstring.
        """
        k, comm = self._step, self.comm
        parallel = comm.size > 1
        suffix = "vti" if isinstance(mesh, ImageGrid) else "vtu"
        piece = f"{self.name}_{k}_{comm.rank}.{suffix}" if parallel else f"{self.name}_{k}.{suffix}"

        def write_piece() -> dict[str, Any]:
            t = float(time)
            if not math.isfinite(t) or t <= self._last_time:
                raise ValueError(f"VTKFile.write: expected a finite time later than the last step's "
                                 f"({self._last_time!r}), got {t!r}")
            if not isinstance(mesh, (ImageGrid, UnstructuredMesh)):
                raise ValueError(f"VTKFile.write: expected an ImageGrid or UnstructuredMesh, got {type(mesh).__name__}")
            points, cells = _fields(mesh, *self._sort_fields(mesh, point_data, cell_data, fields))
            _write_piece(self.folder / piece, mesh, points, cells)
            layout = ((mesh.origin, mesh.spacing) if isinstance(mesh, ImageGrid)
                      else mesh.points.dtype.name)
            return {"time": t, "suffix": suffix, "layout": layout,
                    "points": _array_specs(points), "cells": _array_specs(cells),
                    "piece": (piece, mesh.extent if isinstance(mesh, ImageGrid) else None)}

        if not parallel:
            spec = write_piece()
            self._pvd.add(spec["time"], f"{self.name}/{piece}")
            self._step, self._last_time = k + 1, spec["time"]
            return

        try:
            mine, error = write_piece(), None
        except Exception as exc:
            mine, error = f"{type(exc).__name__}: {exc}", exc
        gathered = comm.gather(mine, root=0)

        def write_index() -> float:
            failed = [f"rank {r}: {s}" for r, s in enumerate(gathered) if isinstance(s, str)]
            if failed:
                raise _FailedOnRank("VTKFile.write failed on " + "; ".join(failed))
            first = gathered[0]
            for r, s in enumerate(gathered):
                for key in ("time", "suffix", "layout", "points", "cells"):
                    if s[key] != first[key]:
                        raise ValueError(f"VTKFile.write: ranks disagree on {key}: rank 0 has {first[key]!r}, "
                                         f"rank {r} has {s[key]!r}")
            index = self.folder / f"{self.name}_{k}.p{first['suffix']}"
            if first["suffix"] == "vti":
                origin, spacing = first["layout"]
                write_pvti(index, [s["piece"] for s in gathered], spacing=spacing, origin=origin,
                           point_arrays=first["points"], cell_arrays=first["cells"])
            else:
                write_pvtu(index, [s["piece"][0] for s in gathered], first["points"], first["cells"],
                           points_dtype=first["layout"])
            self._pvd.add(first["time"], f"{self.name}/{index.name}")
            return first["time"]

        if error is not None:  # join the broadcast all the same, so that no rank waits forever
            try:
                _on_root(comm, write_index)
            except _FailedOnRank:
                pass
            raise error
        self._last_time = _on_root(comm, write_index)
        self._step = k + 1

    @staticmethod
    def _sort_fields(mesh: ImageGrid | UnstructuredMesh, point_data: Mapping[str, Any] | None,
                     cell_data: Mapping[str, Any] | None, fields: dict[str, Any]) -> tuple[dict, dict]:
        """Split ``fields`` into point and cell data by their leading shape."""
        points, cells = _check_names(point_data, "point_data"), _check_names(cell_data, "cell_data")
        n_lead = len(mesh.point_shape)
        for name, value in fields.items():
            if name in points or name in cells:
                raise ValueError(f"VTKFile.write: field {name!r} given twice")
            lead = tuple(np.shape(value)[:n_lead])
            on_points, on_cells = lead == mesh.point_shape, lead == mesh.cell_shape
            if on_points and on_cells:
                raise ValueError(f"VTKFile.write: field {name!r} of shape {np.shape(value)} fits both the points "
                                 f"{mesh.point_shape} and the cells {mesh.cell_shape}; pass it in "
                                 f"point_data= or cell_data=")
            if not (on_points or on_cells):
                raise ValueError(f"VTKFile.write: field {name!r}: expected leading shape {mesh.point_shape} "
                                 f"(points) or {mesh.cell_shape} (cells), got shape {tuple(np.shape(value))}")
            (points if on_points else cells)[name] = value
        return points, cells
