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
]
