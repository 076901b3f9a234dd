"""Picture of the small protocol's avatar beside the truth: ``python -m benchmarks.figure_pina DATA OUT.png``.

DATA is a ``rgbd2avatar bench`` output folder (``DATA/small/{capture,subject}``). One training
frame near the middle of the capture, front and side: the fitted naked body, the PINA avatar
(fast posed mesh) and the ground-truth clothed mesh; then the avatar's canonical mesh.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from capture.files import write_image
from rgbd2avatar.avatar.meshes import canonical_mesh
from rgbd2avatar.avatar.store import load_avatar
from rgbd2avatar.bench import PROTOCOLS, avatar_meshes, fitted_body_meshes, true_mesh
from rgbd2avatar.preview import framing_cameras
from rgbd2avatar.render import contact_sheet, render_mesh

CAMERA_TO_UPRIGHT = np.array([1.0, -1.0, -1.0], np.float32)
"""Depth-camera coordinates (y down, z away) to the viewer's (y up), a half turn about x."""


def figure(data: Path) -> np.ndarray:
    """(H, W, 3) uint8 contact sheet, columns: fitted body, PINA, truth, PINA canonical."""
    protocol = PROTOCOLS["small"]
    subject = data / "small" / "subject"
    frames = load_avatar(subject / "pina" / "avatar.pt").frames.numpy()
    frame = frames[len(frames) // 2 : len(frames) // 2 + 1]
    truth = true_mesh(data / "small" / "capture", frame[0])
    meshes = [
        fitted_body_meshes(subject, frame)[0],
        avatar_meshes(subject, frame, protocol.mesh_resolution)[0],
        (np.asarray(truth.vertices, np.float32), np.asarray(truth.faces)),
    ]
    meshes = [(vertices * CAMERA_TO_UPRIGHT, faces) for vertices, faces in meshes]
    canonical = canonical_mesh(load_avatar(subject / "pina" / "avatar.pt").avatar, resolution=256)
    views = ("front", "side")
    posed_cameras = framing_cameras(np.concatenate([m[0] for m in meshes]), views, 320, 420)
    canonical_cameras = framing_cameras(canonical.vertices, views, 320, 420)
    panels, labels = [], []
    for view, camera, canonical_camera in zip(views, posed_cameras, canonical_cameras, strict=True):
        for (vertices, faces), name in zip(meshes, ("fitted body", "PINA", "truth"), strict=True):
            panels.append(render_mesh(vertices, faces, camera))
            labels.append(f"{name}, frame {frame[0]} ({view})")
        panels.append(render_mesh(canonical.vertices, canonical.faces, canonical_camera))
        labels.append(f"PINA canonical ({view})")
    return contact_sheet(panels, cols=4, labels=labels)


if __name__ == "__main__":
    write_image(Path(sys.argv[2]), figure(Path(sys.argv[1])))
