"""Sensor and recording I/O: sequences, calibration, back-projection, normals (no imports of ours)."""
