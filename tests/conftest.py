"""Shared fixtures: a tiny two-camera calibration, a frame factory and an empty workspace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from capture.sequence import Calibration, CameraIntrinsics, RGBDFrame
from rgbd2avatar.workspace import Workspace

DEPTH_SIZE = (24, 32)
"""(H, W) of the fixture depth camera."""
COLOR_SIZE = (36, 48)
"""(H, W) of the fixture colour camera."""


@pytest.fixture
def calibration() -> Calibration:
    """A small Azure-Kinect-like calibration: distorted depth and colour cameras, 3.2 cm apart."""
    depth = CameraIntrinsics(
        width=DEPTH_SIZE[1],
        height=DEPTH_SIZE[0],
        fx=25.2,
        fy=25.3,
        cx=15.7,
        cy=12.1,
        k1=0.51,
        k2=-0.02,
        k3=-0.003,
        k4=0.85,
        k5=0.12,
        k6=-0.011,
        p1=1.2e-5,
        p2=-7.3e-5,
    )
    color = CameraIntrinsics(
        width=COLOR_SIZE[1],
        height=COLOR_SIZE[0],
        fx=40.1,
        fy=40.0,
        cx=23.9,
        cy=17.6,
        k1=0.08,
        k2=-0.05,
        k3=0.01,
        p1=3e-4,
        p2=-1e-4,
    )
    depth_to_color = np.eye(4, dtype=np.float32)
    depth_to_color[:3, 3] = [-0.032, -0.002, 0.004]
    return Calibration(depth, color, depth_to_color, device="Azure Kinect", serial="000123", source="test")


@pytest.fixture
def make_frame() -> Callable[..., RGBDFrame]:
    """``make_frame(index, color=True)``: a frame of random depth (with 0 and 65535) and colour."""
    rng = np.random.default_rng(0)

    def make(index: int, *, color: bool = True) -> RGBDFrame:
        depth = rng.integers(0, 65536, DEPTH_SIZE, dtype=np.uint16)
        depth.flat[:2] = [0, 65535]
        image = rng.integers(0, 256, (*COLOR_SIZE, 3), dtype=np.uint8) if color else None
        time = index / 30.0
        return RGBDFrame(index, depth, image, depth_time=time, color_time=time + 1.3e-4 if color else None)

    return make


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A new, empty subject workspace."""
    return Workspace.create(tmp_path / "subject")


@pytest.fixture
def one_thread():
    """One intra-op thread: for tests of tiny tensors, where on a busy machine the thread hand-offs
    at every small operation (a solver loop has dozens per step) would dominate the test's time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
