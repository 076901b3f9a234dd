"""SMPL through smplx: find the user's SMPL file, read it, convert it to a :class:`BodyModel`.

SMPL's license forbids shipping it, so the user downloads it and points ``--model-dir`` at it.
Accepted file names (matched case-insensitively, in ``model_dir``, ``model_dir/smpl``,
``model_dir/smpl/models`` or ``model_dir/models``) are smplx's own (``SMPL_NEUTRAL.pkl``,
``SMPL_MALE.pkl``, ``SMPL_FEMALE.pkl``, or the same names as ``.npz``) and the official
download names, see :data:`SMPL_FILE_NAMES`.

The official ``.pkl`` files hold ``chumpy`` arrays and a ``scipy.sparse`` joint regressor.
chumpy is unmaintained and breaks on current numpy, so we read the pickle with a restricted
unpickler that turns chumpy arrays into plain numpy arrays and refuses any other code; then
smplx builds its buffers from those arrays (``smplx.SMPL(data_struct=...)``) and we convert
them. Pose correctives match by construction: smplx and :func:`lbs.pose_feature` both flatten
(R_j − I) for joints 1..23 row-major and multiply by posedirs stored as (207, V·3).

Shapes: V vertices (6890 for SMPL), T triangles, J = 24 joints, C = 10 betas.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import smplx
import torch
from smplx.utils import Struct

from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.body.skeleton import NUM_JOINTS, PARENTS
from rgbd2avatar.errors import UserError

GENDERS: tuple[str, ...] = ("neutral", "male", "female")
SMPL_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "neutral": (
        "SMPL_NEUTRAL.pkl",
        "SMPL_NEUTRAL.npz",
        "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl",
        "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
    ),
    "male": (
        "SMPL_MALE.pkl",
        "SMPL_MALE.npz",
        "basicmodel_m_lbs_10_207_0_v1.1.0.pkl",
        "basicmodel_m_lbs_10_207_0_v1.0.0.pkl",
    ),
    "female": (
        "SMPL_FEMALE.pkl",
        "SMPL_FEMALE.npz",
        "basicmodel_f_lbs_10_207_0_v1.1.0.pkl",
        "basicModel_f_lbs_10_207_0_v1.0.0.pkl",
    ),
}
"""File names accepted per gender, in order of preference."""
SEARCH_FOLDERS: tuple[str, ...] = (".", "smpl", "smpl/models", "models")
"""Folders under ``--model-dir`` searched for the files (smplx's layout and the official zip's)."""
NUM_BETAS = 10
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)
REQUIRED_KEYS: tuple[str, ...] = (
    "v_template",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "kintree_table",
    "f",
)


def load_smpl(model_dir: Path | str, gender: str = "neutral") -> BodyModel:
    """Load SMPL of one gender as a :class:`BodyModel` with 10 betas and pose correctives.

    Args:
        model_dir: the folder given by ``--model-dir``.
        gender: "neutral", "male" or "female".
    Returns:
        BodyModel named ``smpl-<gender>``: v_template (V, 3), shapedirs (V, 3, 10), posedirs
        (207, V·3), no UVs.
    Raises:
        UserError: unknown gender, missing folder or file, unreadable or malformed file, or a
            kinematic tree other than SMPL's.
    """
    path = find_smpl_file(model_dir, gender)
    arrays = read_smpl_arrays(path)
    check_smpl_arrays(arrays, path)
    return body_model_from_smplx(smplx_model(path, arrays, gender), f"smpl-{gender}")


def find_smpl_file(model_dir: Path | str, gender: str) -> Path:
    """The SMPL file of ``gender`` under ``model_dir`` (see :data:`SEARCH_FOLDERS`).

    Raises:
        UserError: unknown gender, or no accepted file name found.
    """
    if gender not in GENDERS:
        raise UserError(f"Unknown SMPL gender '{gender}': use --gender neutral, male or female.")
    model_dir = Path(model_dir).expanduser()
    wanted = [name.lower() for name in SMPL_FILE_NAMES[gender]]
    for folder in (model_dir / sub for sub in SEARCH_FOLDERS):
        found = {p.name.lower(): p for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
        for name in wanted:
            if name in found:
                return found[name]
    raise UserError(
        f"No SMPL {gender} model found in {model_dir}: download SMPL from smpl.is.tue.mpg.de and put "
        f"{_names(gender)} into that folder (or its smpl/ subfolder), or point --model-dir to the "
        "folder that holds it."
    )


def read_smpl_arrays(path: Path) -> dict[str, Any]:
    """Read a SMPL ``.npz`` or ``.pkl`` (chumpy arrays included) without running foreign code.

    Returns:
        name → value; SMPL's arrays as dense numpy arrays.
    Raises:
        UserError: the file is not a readable SMPL archive.
    """
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        with path.open("rb") as file:
            data = _SmplUnpickler(file, encoding="latin1").load()
    except (
        OSError,
        ValueError,
        EOFError,
        pickle.UnpicklingError,
        AttributeError,
        ImportError,
        TypeError,
    ) as err:
        raise _bad_file(path, f"unreadable: {err}") from err
    if not isinstance(data, dict):
        raise _bad_file(path, "not a dictionary of arrays")
    return {key: _plain(value) for key, value in data.items()}


def check_smpl_arrays(arrays: dict[str, Any], path: Path) -> None:
    """Check that the arrays form an SMPL model on our kinematic tree.

    Expected: v_template (V, 3), shapedirs (V, 3, ≥10), posedirs (V, 3, 207), J_regressor
    (24, V), weights (V, 24), kintree_table (2, 24) with SMPL's parents, f (T, 3) indices < V.

    Raises:
        UserError: a key is missing or an array has the wrong shape.
    """
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise _bad_file(path, f"missing {', '.join(missing)}")
    n = np.shape(arrays["v_template"])[0]
    expected = {
        "v_template": (n, 3),
        "shapedirs": (n, 3, None),
        "posedirs": (n, 3, NUM_POSE_BASIS),
        "J_regressor": (NUM_JOINTS, n),
        "weights": (n, NUM_JOINTS),
        "kintree_table": (2, NUM_JOINTS),
        "f": (None, 3),
    }
    for key, shape in expected.items():
        if not _shape_matches(np.shape(arrays[key]), shape):
            raise _bad_file(path, f"{key} has shape {np.shape(arrays[key])}, expected {shape}")
    if np.shape(arrays["shapedirs"])[2] < NUM_BETAS:
        raise _bad_file(path, f"shapedirs has fewer than {NUM_BETAS} betas")
    if np.asarray(arrays["f"]).max() >= n:
        raise _bad_file(path, "faces index missing vertices")
    parents = [-1, *np.asarray(arrays["kintree_table"])[0, 1:].astype(np.int64).tolist()]
    if tuple(parents) != PARENTS:
        raise _bad_file(path, "its kintree_table is not SMPL's 24-joint tree")


def smplx_model(path: Path, arrays: dict[str, Any], gender: str) -> smplx.SMPL:
    """smplx's SMPL module built from already-read arrays (smplx's own loader needs chumpy).

    smplx prints a warning for every 10-beta SMPL file; it is swallowed.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        return smplx.SMPL(
            model_path=str(path),
            data_struct=Struct(**arrays),
            gender=gender,
            num_betas=NUM_BETAS,
            batch_size=1,
        )


def body_model_from_smplx(smpl: smplx.SMPL, name: str) -> BodyModel:
    """Convert smplx's buffers: joints and their shape directions through the J regressor.

    j_template = J_regressor · v_template (J, 3); joint_shapedirs = J_regressor · shapedirs
    (J, 3, C), computed in float64 so that they match smplx's regressed joints to float32
    precision.
    """
    regressor = smpl.J_regressor.double()  # (J, V)
    shapedirs = smpl.shapedirs.double()  # (V, 3, C)
    return BodyModel(
        name=name,
        v_template=smpl.v_template,
        shapedirs=smpl.shapedirs,
        j_template=regressor @ smpl.v_template.double(),
        joint_shapedirs=torch.einsum("jv,vkc->jkc", regressor, shapedirs),
        weights=smpl.lbs_weights,
        faces=smpl.faces_tensor,
        shape_names=[f"beta{i}" for i in range(smpl.num_betas)],
        default_shape=torch.zeros(smpl.num_betas),
        posedirs=smpl.posedirs,
    )


class _ChumpyArray:
    """Stands in for a pickled ``chumpy.Ch``: keeps its state, whose ``x`` is the array."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


class _SmplUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, scipy sparse matrices and chumpy arrays, nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        if (module, name) in self._ALLOWED or (
            module.startswith("scipy.sparse") and name.endswith("_matrix")
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _plain(value: Any) -> Any:
    """A chumpy stand-in or a scipy sparse matrix as a dense numpy array; anything else unchanged."""
    if isinstance(value, _ChumpyArray):
        return np.asarray(value.state.get("x"))
    return value.toarray() if scipy.sparse.issparse(value) else value


def _shape_matches(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True)
    )


def _names(gender: str) -> str:
    first, *others = SMPL_FILE_NAMES[gender]
    return f"{first} (or {', '.join(others)})"


def _bad_file(path: Path, problem: str) -> UserError:
    gender = next(
        (g for g, names in SMPL_FILE_NAMES.items() if path.name.lower() in map(str.lower, names)), "neutral"
    )
    return UserError(
        f"{path} is not a usable SMPL model file ({problem}): replace it with {_names(gender)} from the "
        "SMPL download at smpl.is.tue.mpg.de, or point --model-dir to a folder that holds one."
    )
