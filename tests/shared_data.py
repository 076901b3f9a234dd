"""The project's shared test data (``../shared`` beside the repository, as CI provides it)."""

from pathlib import Path

import pytest

RECORDING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "azure_kinect" / "recording.mkv"
"""A real Azure Kinect recording (MIT, from pyk4a's tests): one capture of a desk."""

needs_recording = pytest.mark.skipif(not RECORDING.exists(), reason=f"{RECORDING} is not available")
