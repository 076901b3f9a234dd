"""The pixel-aligned renderer: blending weights, the texture fallback, relighting, camera rays and
source choice on a plane seen by analytic cameras; the texture and render commands on a tiny
avatar with a tiny recording (files, manifest, one-line errors)."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from capture.calibration import project
from capture.sequence import Calibration, CameraIntrinsics, RGBDFrame, SequenceWriter
from rgbd2avatar.avatar.avatar import Avatar
from rgbd2avatar.avatar.store import save_avatar
from rgbd2avatar.body import load_body_model
from rgbd2avatar.body.model import canonical_pose
from rgbd2avatar.cli import app
from rgbd2avatar.geometry import vertex_normals
from rgbd2avatar.pixel_renderer import (
    TEXTURE_FLAG,
    Blender,
    SourceView,
    ViewCamera,
    blend_inputs,
    choose_sources,
    look_at,
    pinhole,
    surface_pixels,
    to_image,
)
from rgbd2avatar.texture import DepthMap, UVMesh
from rgbd2avatar.workspace import Workspace
from tests.cli_helpers import TINY, one_error_line, runner

CAMERA = CameraIntrinsics(width=40, height=30, fx=35.0, fy=35.0, cx=19.5, cy=14.5, k1=0.04, p2=2e-4)


def plane(z: float, half: float = 0.3) -> UVMesh:
    """Two triangles facing −z (the camera at the origin), UVs over the unit square."""
    vertices = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], np.float32)
    uvs = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)
    return UVMesh(vertices, np.array([[0, 2, 1], [0, 3, 2]]), uvs)


def source_view(mesh: UVMesh, vertices: np.ndarray, colour, direction=(0.0, 0.0, 1.0)) -> SourceView:
    """A source whose colour camera sits at the origin of the mesh's frame and sees one colour."""
    image = np.broadcast_to(np.uint8(colour), (*CAMERA.shape, 3)).copy()
    return SourceView(
        frame=0, row=0, vertices=vertices, normals=vertex_normals(vertices, mesh.faces), image=image,
        camera=ViewCamera(CAMERA, np.eye(4)), depth_map=DepthMap.of_mesh(vertices, mesh.faces, CAMERA, 0.05),
        joints=np.zeros((24, 3)), direction=np.asarray(direction, dtype=np.float64),
    )  # fmt: skip


def flat_blender(seed: int = 0) -> Blender:
    """A random blender whose shading is uniform (relighting changes nothing)."""
    torch.manual_seed(seed)
    blender = Blender(hidden=8)
    with torch.no_grad():
        blender.ambient.fill_(1.0)
        blender.diffuse.zero_()
    return blender


def test_weights_sum_to_one_over_visible_sources():
    blender = flat_blender()
    features = torch.randn(50, 5, 35)
    visible = torch.rand(50, 5) > 0.4
    visible[:3] = False
    weights = blender.weights(features, visible)
    seen = visible.any(1)
    torch.testing.assert_close(weights[seen].sum(1), torch.ones(int(seen.sum())))
    assert (weights[~visible] == 0).all() and (weights[:3] == 0).all()


def test_blend_equals_a_source_that_agrees_with_the_texture():
    mesh = plane(1.0)
    texture = np.full((8, 8, 3), (40, 120, 200), np.uint8)
    pixels = surface_pixels(mesh, mesh.vertices, ViewCamera(CAMERA, np.eye(4)).rays(), np.zeros(3))
    assert len(pixels.rows) > 100
    sources = [source_view(mesh, mesh.vertices, (40, 120, 200))]
    inputs = blend_inputs(sources, [0], mesh, texture, pixels, mesh.vertices, _options())
    assert (
        inputs.visible[:, 0].mean() > 0.6
        and inputs.visible[:, -1].all()
        and not inputs.visible[:, 1:-1].any()
    )
    assert (inputs.features[:, -1, TEXTURE_FLAG] == 1).all() and (
        inputs.features[:, 0, TEXTURE_FLAG] == 0
    ).all()
    colours, weights = flat_blender()(inputs.tensors())
    torch.testing.assert_close(weights.sum(1), torch.ones(len(weights)))
    expected = torch.tensor([40, 120, 200]) / 255.0
    torch.testing.assert_close(colours, expected.expand_as(colours).float(), atol=1e-5, rtol=0)


def test_the_texture_fills_what_no_source_sees():
    mesh = plane(1.0)
    texture = np.full((8, 8, 3), (200, 10, 10), np.uint8)
    hidden = mesh.vertices + np.float32([0.0, 0.0, -2.0])  # behind the source camera
    sources = [source_view(mesh, hidden, (0, 255, 0))]
    camera = ViewCamera(CAMERA, np.eye(4))
    pixels = surface_pixels(mesh, mesh.vertices, camera.rays(), camera.centre)
    inputs = blend_inputs(sources, [0], mesh, texture, pixels, mesh.vertices, _options())
    assert not inputs.visible[:, 0].any()
    colours, weights = flat_blender()(inputs.tensors())
    assert (weights[:, :-1] == 0).all() and (weights[:, -1] == 1).all()
    torch.testing.assert_close(colours, (torch.tensor([200, 10, 10]) / 255.0).expand_as(colours).float())
    rendered = to_image(pixels, colours.detach().numpy(), CAMERA.shape, ~inputs.visible[:, :-1].any(1))
    assert rendered.fallback[rendered.mask].all() and (rendered.image[~rendered.mask] == 0).all()
    assert (rendered.image[rendered.mask] == (200, 10, 10)).all()


def test_relighting_divides_out_the_source_shading():
    blender = Blender(hidden=4)
    with torch.no_grad():
        blender.light.copy_(torch.tensor([0.0, 0.0, -1.0]))
        blender.ambient.fill_(0.2)
        blender.diffuse.fill_(0.8)
        for layer in blender.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
    tilted = np.array([0.0, np.sin(1.0), -np.cos(1.0)], np.float32)
    inputs = {
        "colours": torch.tensor([[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]]),
        "visible": torch.tensor([[True, False]]),
        "features": torch.zeros(1, 2, 35),
        "source_normals": torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]]),
        "target_normals": torch.from_numpy(tilted[None]),
    }
    colours, _ = blender(inputs)
    expected = 0.5 * (0.2 + 0.8 * np.cos(1.0)) / 1.0
    torch.testing.assert_close(colours, torch.full((1, 3), float(expected)), atol=1e-3, rtol=0)


def test_camera_rays_project_back_to_their_pixels():
    pose = look_at(np.array([0.4, -0.2, -1.0]), np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0]))
    rays = ViewCamera(CAMERA, pose).rays()
    depth = 1.7
    points = rays[..., :3] + depth * rays[..., 3:]  # (H, W, 3) frame points at camera depth 1.7
    local = (points.reshape(-1, 3) - pose[:3, 3]) @ pose[:3, :3]
    pixels, z = project(local, CAMERA)
    v, u = np.mgrid[0 : CAMERA.height, 0 : CAMERA.width]
    np.testing.assert_allclose(pixels, np.stack([u, v], -1).reshape(-1, 2), atol=1e-3)
    np.testing.assert_allclose(z, depth, atol=1e-5)
    assert np.allclose(pinhole(64, 48, 60.0).cx, 31.5)


def test_sources_are_chosen_by_view_direction():
    mesh = plane(1.0)
    directions = [(0, 0, 1), (1, 0, 0), (0, 0, -1), (0.6, 0, 0.8)]
    sources = [source_view(mesh, mesh.vertices, (0, 0, 0), d) for d in directions]
    assert choose_sources(sources, np.array([0.0, 0.0, 1.0]), 2) == [0, 3]
    assert choose_sources(sources, np.array([0.0, 0.0, 1.0]), 2, frozenset({0})) == [3, 1]


def _options():
    from rgbd2avatar.pixel_renderer import RenderOptions

    return RenderOptions(edge_margin=1e-6)


# --------------------------------------------------------------------------------------------------
# Commands


def tiny_recording(root, frames: int) -> None:
    """A recording whose colour frames are a colour ramp, depth empty."""
    depth = CameraIntrinsics(width=32, height=24, fx=30.0, fy=30.0, cx=15.5, cy=11.5)
    colour = CameraIntrinsics(width=96, height=64, fx=80.0, fy=80.0, cx=47.5, cy=31.5, k1=0.02)
    transform = np.eye(4, dtype=np.float32)
    transform[0, 3] = -0.03
    v, u = np.mgrid[0:64, 0:96]
    image = np.stack([u * 2, v * 3, np.full_like(u, 128)], -1).astype(np.uint8)
    with SequenceWriter(root, Calibration(depth, colour, transform)) as writer:
        for index in range(frames):
            writer.write(RGBDFrame(index, np.zeros((24, 32), np.uint16), image, index / 30, index / 30))


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """A workspace with an untrained tiny avatar (its SDF is the initial sphere) in the canonical
    pose 2.5 m in front of the camera in frames 0 and 3 (the second a little to the side), and a
    4-frame recording."""
    root = tmp_path_factory.mktemp("render") / "subject"
    Workspace.create(root)
    torch.manual_seed(0)
    body = load_body_model("anny")
    avatar = Avatar(body, body.default_shape, TINY)
    poses = canonical_pose().repeat(2, 1)  # every bone moves alike: the skinned sphere stays a sphere
    poses[:, :3] = torch.tensor([1.0, 0.0, 1.0]) * np.pi / np.sqrt(2)  # upright, side on: the sphere
    # is cut open at the thin canonical box's front and back, not at its sides
    trans = torch.tensor([[0.0, 0.0, 2.5], [0.05, 0.0, 2.5]])
    save_avatar(root / "pina" / "avatar.pt", avatar, torch.tensor([0, 3]), poses, trans)
    tiny_recording(root / "recording", 4)
    return root


TEXTURE_ARGS = ["--resolution", "32", "--size", "64", "--faces", "400", "--blender-steps", "3"]


@pytest.fixture(scope="module")
def textured(subject):
    """The tiny subject after the texture command."""
    result = runner.invoke(app, ["texture", str(subject), *TEXTURE_ARGS])
    assert result.exit_code == 0, result.output
    return subject


def test_texture_then_render(textured, tmp_path):
    subject = textured
    folder = subject / "texture"
    for name in ("avatar.obj", "avatar.mtl", "texture.png", "avatar.glb", "atlas.npz", "blender.pt"):
        assert (folder / name).is_file()
    summary = json.loads((folder / "texture.json").read_text())
    assert summary["frames"] == [0, 3] and summary["faces"] <= 400 and summary["seen_share"] > 0
    manifest = json.loads((subject / "manifest.json").read_text())
    finished = manifest["stages"]["texture"]["finished"]
    again = runner.invoke(app, ["texture", str(subject), *TEXTURE_ARGS])
    assert again.exit_code == 0 and "up to date" in again.stderr
    assert json.loads((subject / "manifest.json").read_text())["stages"]["texture"]["finished"] == finished

    out = tmp_path / "walk"
    result = runner.invoke(
        app, ["render", str(subject), "-m", "walk", "--frames", "0:2", "-c", "capture", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["000000.png", "000001.png"]
    with av.open(str(out / "render.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 2
    summary = json.loads((out / "render.json").read_text())
    assert summary["frames"] == 2 and summary["size"] == [96, 64] and summary["method"] == "pixel"

    result = runner.invoke(
        app, ["render", str(subject), "-m", "squat", "--frames", "0:1", "--method", "texture"]
    )
    assert result.exit_code == 0, result.output
    orbit = subject / "texture" / "renders" / "squat-orbit"
    assert json.loads((orbit / "render.json").read_text())["size"] == [640, 576]


def test_errors_are_one_line(textured, tmp_path):
    subject = textured
    empty = tmp_path / "empty"
    Workspace.create(empty)
    assert "avatar.pt" in one_error_line(runner.invoke(app, ["texture", str(empty)]))
    assert "avatar.pt" in one_error_line(runner.invoke(app, ["render", str(empty), "-m", "walk"]))
    untextured = tmp_path / "untextured"
    Workspace.create(untextured)
    (untextured / "pina").mkdir()
    (untextured / "pina" / "avatar.pt").write_bytes((subject / "pina" / "avatar.pt").read_bytes())
    assert "texture" in one_error_line(runner.invoke(app, ["render", str(untextured), "-m", "walk"]))
    assert "recording" in one_error_line(runner.invoke(app, ["texture", str(untextured)]))
    assert "--size" in one_error_line(runner.invoke(app, ["texture", str(subject), "--size", "100"]))
    bad = tmp_path / "bad.npz"
    bad.write_text("not a motion")
    render = ["render", str(subject)]
    assert "bad.npz" in one_error_line(runner.invoke(app, [*render, "-m", str(bad)]))
    assert "--camera" in one_error_line(runner.invoke(app, [*render, "-m", "walk", "-c", "nowhere"]))
    camera = tmp_path / "camera.json"
    camera.write_text(json.dumps({"intrinsics": {"width": 8}}))
    assert "camera.json" in one_error_line(runner.invoke(app, [*render, "-m", "walk", "-c", str(camera)]))
    assert "--method" in one_error_line(runner.invoke(app, [*render, "-m", "walk", "--method", "nerf"]))
    assert not (subject / "texture" / "renders" / "bad-orbit").exists()
