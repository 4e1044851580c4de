"""Cell faces and the boundary of a quadrilateral or hexahedral mesh.

A face is listed by its nodes in the order that makes its normal point out of its cell: the
edges of a counter-clockwise quadrilateral, counter-clockwise around it (outward normal to the
right of the direction of travel), and the faces of a VTK hexahedron counter-clockwise seen
from outside (outward normal by the right-hand rule).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CELL_FACES", "boundary_faces", "faces_on"]

#: kind -> local node indices of each face, oriented outward (see the module docstring)
CELL_FACES: dict[str, tuple[tuple[int, ...], ...]] = {
    "quad": ((0, 1), (1, 2), (2, 3), (3, 0)),
    "hexahedron": ((0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)),
}


def boundary_faces(cells: np.ndarray, kind: str) -> np.ndarray:
    """The faces that belong to one cell only, oriented outward.

    Parameters
    ----------
    cells : ndarray, shape ``(C, 4)`` or ``(C, 8)``
        VTK order, positive orientation.
    kind : ``'quad'`` or ``'hexahedron'``

    Returns
    -------
    ndarray, shape ``(F, 2)`` (edges) or ``(F, 4)``, int64, ordered by cell, then by local face.

    Examples
    --------
    >>> from sciml.meshes import box_mesh_2d
    >>> boundary_faces(box_mesh_2d(2, 1, 2.0, 1.0)[1], "quad").tolist()
    [[0, 1], [4, 3], [3, 0], [1, 2], [2, 5], [5, 4]]
    """
    if kind not in CELL_FACES:
        raise ValueError(f"boundary_faces: expected kind one of {sorted(CELL_FACES)}, got {kind!r}")
    local = np.array(CELL_FACES[kind])
    cells = np.asarray(cells, dtype=np.int64)
    if cells.ndim != 2 or cells.shape[1] != local.max() + 1:
        raise ValueError(f"boundary_faces: expected {kind} cells of shape (C, {local.max() + 1}), got {cells.shape}")
    faces = cells[:, local].reshape(-1, local.shape[1])  # cell-major
    _, inverse, counts = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inverse.reshape(-1)] == 1]


def faces_on(faces: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The rows of ``faces (F, k)`` whose nodes all lie in ``nodes``, in their order."""
    faces = np.asarray(faces, dtype=np.int64)
    return faces[np.isin(faces, np.asarray(nodes, dtype=np.int64)).all(axis=1)]
