"""Structured grids, finite-element meshes (generated or read with meshio), their boundaries,
partitioning and ParaView writers."""

from sciml.meshes.paraview import (
    CELL_TYPES,
    ImageGrid,
    PVDCollection,
    PVDEntry,
    UnstructuredMesh,
    VTKFile,
    read_pvd,
    write_pvti,
    write_pvtu,
    write_vti,
    write_vtu,
)
from sciml.meshes.structured import box_mesh_2d, box_mesh_3d, extrude_mesh, nodes_on_plane, nodes_on_sphere
from sciml.meshes.blade import blade_mesh, naca_camber, naca_thickness
from sciml.meshes.plate_hole import plate_with_hole_mesh
from sciml.meshes.files import read_mesh, read_point_series
from sciml.meshes.topology import CELL_FACES, boundary_faces, faces_on

__all__ = [
    "CELL_TYPES",
    "ImageGrid",
    "PVDCollection",
    "PVDEntry",
    "UnstructuredMesh",
    "VTKFile",
    "read_pvd",
    "write_pvti",
    "write_pvtu",
    "write_vti",
    "write_vtu",
    "box_mesh_2d",
    "box_mesh_3d",
    "extrude_mesh",
    "nodes_on_plane",
    "nodes_on_sphere",
    "blade_mesh",
    "naca_thickness",
    "naca_camber",
    "plate_with_hole_mesh",
    "read_mesh",
    "read_point_series",
    "CELL_FACES",
    "boundary_faces",
    "faces_on",
]
