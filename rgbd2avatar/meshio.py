"""Mesh files (PLY, OBJ, GLB through trimesh), written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from capture.files import write_bytes


def write_mesh(
    path: Path, vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray | None = None
) -> None:
    """Write a triangle mesh; the format follows the suffix (``.ply`` binary, ``.obj``, ``.glb``).

    Args:
        vertices: (V, 3) positions in metres; faces: (T, 3) vertex indices;
        vertex_colors: optional (V, 3) uint8 RGB.
    """
    mesh = trimesh.Trimesh(
        np.asarray(vertices), np.asarray(faces), vertex_colors=vertex_colors, process=False
    )
    data = mesh.export(file_type=Path(path).suffix.lstrip(".").lower())
    write_bytes(path, data.encode() if isinstance(data, str) else data)
