"""A small synthetic SMPL model file that smplx and :func:`rgbd2avatar.body.smpl.load_smpl` read.

The body is 24 closed blobs (icospheres of 12 vertices), one around each joint of a rough
SMPL rest skeleton, so V = 288 vertices and T = 480 triangles. Skinning weights tie each blob
to its joint and its parent; shapedirs and posedirs are random but deterministic per seed.

``official=True`` writes the file the way the SMPL download does: a protocol-2 pickle whose
shapedirs is a ``chumpy.ch.Ch`` object and whose J_regressor is a scipy CSC matrix. chumpy
is faked for the time of writing only, so reading the file must work without it.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import trimesh

from rgbd2avatar.body.skeleton import NUM_JOINTS, PARENTS

REST_JOINTS = np.array(
    [
        [0.00, 0.00, 0.00],
        [0.06, -0.09, 0.00],
        [-0.06, -0.09, 0.00],
        [0.00, 0.11, -0.02],
        [0.10, -0.47, 0.00],
        [-0.10, -0.47, 0.00],
        [0.00, 0.25, 0.00],
        [0.09, -0.87, -0.04],
        [-0.09, -0.87, -0.04],
        [0.00, 0.30, 0.02],
        [0.11, -0.93, 0.08],
        [-0.11, -0.93, 0.08],
        [0.00, 0.51, -0.01],
        [0.08, 0.42, -0.01],
        [-0.08, 0.42, -0.01],
        [0.00, 0.60, 0.04],
        [0.18, 0.45, -0.02],
        [-0.18, 0.45, -0.02],
        [0.44, 0.43, -0.04],
        [-0.44, 0.43, -0.04],
        [0.70, 0.44, -0.03],
        [-0.70, 0.44, -0.03],
        [0.78, 0.43, -0.04],
        [-0.78, 0.43, -0.04],
    ]
)
"""(J, 3) a rough SMPL rest skeleton in metres (y up, subject's left is +x)."""
BLOB_RADIUS = 0.035
NUM_BETAS = 10
ROOT_PARENT = 4294967295  # the official kintree_table's uint32 "no parent"


def smpl_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of the synthetic model.

    Returns:
        v_template (V, 3), shapedirs (V, 3, 10), posedirs (V, 3, 207), J_regressor (J, V),
        weights (V, J), kintree_table (2, J) uint32, f (T, 3) uint32.
    """
    rng = np.random.default_rng(seed)
    blob = trimesh.creation.icosphere(subdivisions=0, radius=BLOB_RADIUS)
    per_blob = len(blob.vertices)
    owner = np.repeat(np.arange(NUM_JOINTS), per_blob)  # (V,) joint of each vertex
    v_template = (REST_JOINTS[owner] + np.tile(np.asarray(blob.vertices), (NUM_JOINTS, 1))) * (
        1.0 + 0.05 * seed
    )
    faces = (np.asarray(blob.faces)[None] + per_blob * np.arange(NUM_JOINTS)[:, None, None]).reshape(-1, 3)
    regressor = (owner[None] == np.arange(NUM_JOINTS)[:, None]) / per_blob
    return {
        "v_template": v_template,
        "shapedirs": 0.01 * rng.standard_normal((len(owner), 3, NUM_BETAS)),
        "posedirs": 0.005 * rng.standard_normal((len(owner), 3, 9 * (NUM_JOINTS - 1))),
        "J_regressor": regressor,
        "weights": blob_weights(owner, rng),
        "kintree_table": np.array([[ROOT_PARENT, *PARENTS[1:]], range(NUM_JOINTS)], dtype=np.uint32),
        "f": faces.astype(np.uint32),
    }


def blob_weights(owner: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(V, J) weights: 60–90 % on the owning joint, the rest on its parent (the root keeps all)."""
    own = rng.uniform(0.6, 0.9, len(owner))
    parent = np.array(PARENTS)[owner]
    weights = np.zeros((len(owner), NUM_JOINTS))
    rows = np.arange(len(owner))
    weights[rows, owner] = np.where(parent < 0, 1.0, own)
    np.add.at(weights, (rows[parent >= 0], parent[parent >= 0]), 1.0 - own[parent >= 0])
    return weights


def write_smpl_model(
    path: Path, seed: int = 0, official: bool = False, drop: tuple[str, ...] = (), **replace: Any
) -> dict[str, np.ndarray]:
    """Write the synthetic model to ``path`` (``.npz`` or ``.pkl`` by suffix).

    Args:
        path: file to write; parent folders are created.
        seed: which random model.
        official: write a pickle like the SMPL download (chumpy shapedirs, sparse regressor).
        drop: keys to leave out, to make broken files.
        replace: arrays to write instead of the generated ones.
    Returns:
        The arrays written (before the official file's chumpy/sparse wrapping).
    """
    arrays = {**smpl_arrays(seed), **replace}
    content = {key: value for key, value in arrays.items() if key not in drop}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez(path, **content)
    elif official:
        write_official_pickle(path, content)
    else:
        with path.open("wb") as file:
            pickle.dump(content, file)
    return arrays


def write_official_pickle(path: Path, content: dict[str, Any]) -> None:
    """Pickle (protocol 2) with shapedirs as a fake ``chumpy.ch.Ch`` and a sparse J_regressor."""
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    fake_ch = type("Ch", (), {"__module__": "chumpy.ch", "dterms": ["x"]})
    module.Ch, package.ch = fake_ch, module
    wrapped = dict(content, bs_style="lbs", bs_type="lrotmin")
    if "shapedirs" in wrapped:
        wrapped["shapedirs"] = fake_ch()
        wrapped["shapedirs"].x = content["shapedirs"]
    if "J_regressor" in wrapped:
        wrapped["J_regressor"] = scipy.sparse.csc_matrix(content["J_regressor"])
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        with path.open("wb") as file:
            pickle.dump(wrapped, file, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
