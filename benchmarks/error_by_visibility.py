"""Where the ``small`` protocol's avatars are wrong: the distance from ground-truth surface samples
to each avatar's posed mesh on training frames, split by whether the true surface faces the depth
camera in that frame (seen now), faces away from it (seen, if at all, in other frames of the
turn) or is grazing.

    rgbd2avatar bench                               # once: the capture and the avatars
    python -m benchmarks.error_by_visibility        # prints and stores results/error_by_visibility.json

For each avatar and region: the mean distance (cm, the ground truth → avatar half of Chamfer-L2),
the mean signed distance (cm, positive where the true surface lies outside the avatar: the avatar
is too thin there) and the region's share of the surface. A region is decided per sample by the
cosine c between its true normal and the ray from the camera: c < −0.2 faces the camera, c > 0.2
faces away, grazing between (self-occluded surfaces that face the camera count as facing it).

Meshes at 128³ (fast posed meshes, own pose condition) and 20k samples per frame, 6 frames; about
half a minute per avatar on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.pose_condition import AVATARS, SMALL
from capture.files import write_json
from rgbd2avatar.avatar.meshes import posed_mesh_fast
from rgbd2avatar.avatar.store import load_avatar
from rgbd2avatar.bench import evenly_spaced, true_mesh
from rgbd2avatar.geometry import MeshQuery
from rgbd2avatar.metrics import sample_surface

RESULTS = Path(__file__).resolve().parent / "results" / "error_by_visibility.json"
RESOLUTION, SAMPLES, FRAMES = 128, 20_000, 6
GRAZING = 0.2
"""|cos| between the true normal and the viewing ray below which a sample counts as grazing."""


def regions(points: np.ndarray, normals: np.ndarray) -> dict[str, np.ndarray]:
    """(N,) boolean masks of samples facing the camera (at the origin), grazing and facing away.

    Args:
        points, normals: (N, 3) surface samples and unit normals in the depth camera's frame.
    """
    cosine = np.einsum("nk,nk->n", normals, points) / np.linalg.norm(points, axis=1)
    return {"facing": cosine < -GRAZING, "grazing": np.abs(cosine) <= GRAZING, "away": cosine > GRAZING}


def evaluate(workspace: Path) -> dict[str, dict[str, float]]:
    """Per region: mean distance and signed distance (cm) and surface share, over the frames."""
    stored = load_avatar(workspace / "pina" / "avatar.pt")
    totals: dict[str, dict[str, list[float]]] = {}
    for row in evenly_spaced(FRAMES, len(stored.frames)):
        truth = true_mesh(SMALL / "capture", int(stored.frames[row]))
        mesh = posed_mesh_fast(stored.avatar, stored.poses[row], stored.trans[row], RESOLUTION)
        points, normals = sample_surface(truth.vertices, truth.faces, SAMPLES)
        signed = MeshQuery(mesh.vertices, mesh.faces).signed_distance(points) * 100.0
        for name, mask in regions(points, normals).items():
            region = totals.setdefault(name, {"distance_cm": [], "signed_cm": [], "share": []})
            region["distance_cm"].append(float(np.abs(signed[mask]).mean()))
            region["signed_cm"].append(float(signed[mask].mean()))
            region["share"].append(float(mask.mean()))
    return {
        name: {key: float(np.mean(values)) for key, values in region.items()}
        for name, region in totals.items()
    }


def main() -> None:
    results = {
        name: evaluate(SMALL / name) for name in AVATARS if (SMALL / name / "pina" / "avatar.pt").is_file()
    }
    for name, row in results.items():
        print(
            name,
            " | ".join(
                f"{region}: {values['distance_cm']:.2f} cm (signed {values['signed_cm']:+.2f}, "
                f"{values['share']:.0%})"
                for region, values in row.items()
            ),
        )
    write_json(RESULTS, results)


if __name__ == "__main__":
    main()
