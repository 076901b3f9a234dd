"""The benchmark's ground-truth-poses reference: the body fit it starts from is the true one."""

import numpy as np

from capture.files import load_npz, save_npz
from rgbd2avatar.bench import use_true_bodies


def test_use_true_bodies_takes_the_fitted_frames_of_the_truth(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.array([0, 3, 6, 9])
    fitted = {
        "body_model": np.array("anny"),
        "frames": frames,
        "poses": rng.normal(size=(4, 72)).astype(np.float32),
        "trans": rng.normal(size=(4, 3)).astype(np.float32),
        "shape": rng.uniform(size=6).astype(np.float32),
        "residuals": rng.uniform(size=4).astype(np.float32),
    }
    truth = {
        "poses": rng.normal(size=(12, 72)),
        "trans": rng.normal(size=(12, 3)),
        "shape": rng.uniform(size=6),
    }
    save_npz(tmp_path / "subject" / "body_fit" / "fits.npz", **fitted)
    save_npz(tmp_path / "capture" / "ground_truth" / "body.npz", **truth)

    use_true_bodies(tmp_path / "subject", tmp_path / "capture")

    result = load_npz(tmp_path / "subject" / "body_fit" / "fits.npz")
    np.testing.assert_allclose(result["poses"], truth["poses"][frames], rtol=1e-6)
    np.testing.assert_allclose(result["trans"], truth["trans"][frames], rtol=1e-6)
    np.testing.assert_allclose(result["shape"], truth["shape"], rtol=1e-6)
    assert result["poses"].dtype == np.float32
    np.testing.assert_array_equal(result["frames"], frames)
    np.testing.assert_array_equal(result["residuals"], fitted["residuals"])
    assert str(result["body_model"]) == "anny"
