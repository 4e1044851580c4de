"""Structured grids, finite-element meshes, partitioning and ParaView writers."""

from sciml.meshes.paraview import (
    CELL_TYPES,
    ImageGrid,
    PVDCollection,
    PVDEntry,
    UnstructuredMesh,
    VTKFile,
    write_pvti,
    write_pvtu,
    write_vti,
    write_vtu,
)
from sciml.meshes.structured import box_mesh_2d, box_mesh_3d, nodes_on_plane
from sciml.meshes.blade import blade_mesh, naca_camber, naca_thickness

__all__ = [
    "CELL_TYPES",
    "ImageGrid",
    "PVDCollection",
    "PVDEntry",
    "UnstructuredMesh",
    "VTKFile",
    "write_pvti",
    "write_pvtu",
    "write_vti",
    "write_vtu",
    "box_mesh_2d",
    "box_mesh_3d",
    "nodes_on_plane",
    "blade_mesh",
    "naca_thickness",
    "naca_camber",
]
