"""SMPL through smplx: our BodyModel reproduces smplx's forward; user mistakes become UserErrors."""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS

from rgbd2avatar.body.smpl import SMPL_FILE_NAMES, load_smpl
from rgbd2avatar.errors import UserError
from tests.smpl_fixture import write_smpl_model

FRAMES = 5


def smplx_reference(path: Path) -> smplx.SMPL:
    """smplx's own SMPL loaded from the file; extra landmark joints point at vertex 0."""
    landmarks = {name: 0 for name in SMPLX_VERTEX_IDS["smplh"]}
    with contextlib.redirect_stdout(io.StringIO()):
        return smplx.SMPL(model_path=str(path), vertex_ids=landmarks, num_betas=10)


def random_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(F, 72) poses, (F, 10) betas, (F, 3) translations."""
    gen = torch.Generator().manual_seed(seed)
    pose = 0.5 * torch.randn(FRAMES, 72, generator=gen)
    betas = 2.0 * torch.randn(FRAMES, 10, generator=gen)
    trans = torch.randn(FRAMES, 3, generator=gen)
    return pose, betas, trans


class TouchOnLoad:
    """Unpickling this would create ``path``: stands for foreign code in a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def assert_one_sentence(message: str) -> None:
    assert message.endswith(".") and ". " not in message


def test_forward_matches_smplx(tmp_path: Path) -> None:
    path = tmp_path / "smpl" / "SMPL_NEUTRAL.pkl"
    write_smpl_model(path)
    ours, ref = load_smpl(tmp_path), smplx_reference(path)
    pose, betas, trans = random_inputs()
    out = ours(pose, betas, trans)
    expected = ref(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:], transl=trans)
    torch.testing.assert_close(out.vertices, expected.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints, expected.joints[:, :24], atol=1e-5, rtol=0)


def test_pose_correctives_are_used(tmp_path: Path) -> None:
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    write_smpl_model(path)
    model = load_smpl(tmp_path)
    assert model.posedirs.shape == (207, model.num_vertices * 3)
    pose = random_inputs()[0]
    without = load_smpl(tmp_path)
    without.posedirs = torch.zeros(0)
    assert (model(pose).vertices - without(pose).vertices).abs().max() > 1e-3


def test_buffers(tmp_path: Path) -> None:
    arrays = write_smpl_model(tmp_path / "SMPL_NEUTRAL.pkl")
    model = load_smpl(tmp_path)
    assert model.name == "smpl-neutral"
    assert model.shape_names == [f"beta{i}" for i in range(10)]
    assert torch.equal(model.default_shape, torch.zeros(10))
    assert model.face_uvs.numel() == 0
    np.testing.assert_array_equal(model.faces.numpy(), arrays["f"])
    np.testing.assert_allclose(
        model.j_template.numpy(), arrays["J_regressor"] @ arrays["v_template"], atol=1e-6
    )


def test_official_pickle_reads_without_chumpy(tmp_path: Path) -> None:
    write_smpl_model(tmp_path / "plain" / "SMPL_NEUTRAL.pkl")
    write_smpl_model(
        tmp_path / "zip" / "smpl" / "models" / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl", official=True
    )
    plain, official = load_smpl(tmp_path / "plain"), load_smpl(tmp_path / "zip")
    for name, buffer in plain.named_buffers():
        torch.testing.assert_close(official.get_buffer(name), buffer, msg=name)


def test_npz_and_gender_selection(tmp_path: Path) -> None:
    written = {
        "neutral": write_smpl_model(tmp_path / "SMPL_NEUTRAL.npz", seed=0),
        "male": write_smpl_model(
            tmp_path / "smpl" / "basicmodel_m_lbs_10_207_0_v1.0.0.pkl", seed=1, official=True
        ),
        "female": write_smpl_model(tmp_path / "basicModel_f_lbs_10_207_0_v1.0.0.pkl", seed=2, official=True),
    }
    for gender, arrays in written.items():
        model = load_smpl(tmp_path, gender)
        assert model.name == f"smpl-{gender}"
        np.testing.assert_allclose(model.v_template.numpy(), arrays["v_template"], atol=1e-7)


def test_file_names_match_case_insensitively(tmp_path: Path) -> None:
    arrays = write_smpl_model(tmp_path / "basicModel_m_lbs_10_207_0_v1.1.0.pkl", seed=3)
    np.testing.assert_allclose(
        load_smpl(tmp_path, "male").v_template.numpy(), arrays["v_template"], atol=1e-7
    )


@pytest.mark.parametrize("exists", [False, True])
def test_missing_folder_or_file(tmp_path: Path, exists: bool) -> None:
    model_dir = tmp_path / "models"
    if exists:
        write_smpl_model(model_dir / "SMPL_MALE.pkl")
    with pytest.raises(UserError) as err:
        load_smpl(model_dir, "neutral")
    message = str(err.value)
    assert_one_sentence(message)
    assert "--model-dir" in message and str(model_dir) in message
    assert all(name in message for name in SMPL_FILE_NAMES["neutral"])


def test_file_missing_shapedirs(tmp_path: Path) -> None:
    write_smpl_model(tmp_path / "SMPL_FEMALE.pkl", drop=("shapedirs",))
    with pytest.raises(UserError) as err:
        load_smpl(tmp_path, "female")
    message = str(err.value)
    assert_one_sentence(message)
    assert "shapedirs" in message and "SMPL_FEMALE.pkl" in message and "--model-dir" in message


@pytest.mark.parametrize(
    "replace",
    [
        {"posedirs": np.zeros((288, 3, 10))},
        {"weights": np.zeros((288, 23))},
        {"kintree_table": np.array([[4294967295, *range(23)], range(24)], dtype=np.uint32)},
    ],
    ids=["posedirs", "weights", "kintree"],
)
def test_malformed_arrays(tmp_path: Path, replace: dict[str, np.ndarray]) -> None:
    write_smpl_model(tmp_path / "SMPL_NEUTRAL.npz", **replace)
    with pytest.raises(UserError) as err:
        load_smpl(tmp_path)
    assert_one_sentence(str(err.value))
    assert next(iter(replace)) in str(err.value)


def test_garbage_and_foreign_code_are_refused(tmp_path: Path) -> None:
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="unreadable"):
        load_smpl(tmp_path)
    marker = tmp_path / "executed"
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(TouchOnLoad(marker)))
    with pytest.raises(UserError, match="unreadable"):
        load_smpl(tmp_path)
    assert not marker.exists()


def test_unknown_gender(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--gender"):
        load_smpl(tmp_path, "kid")
