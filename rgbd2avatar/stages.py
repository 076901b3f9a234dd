"""Pipeline stages on a subject workspace: each reads the previous stage's files, writes its own,
and records itself in the manifest, so that an up-to-date stage is skipped and a changed input,
parameter or output re-runs it (see :mod:`rgbd2avatar.workspace`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rgbd2avatar.errors import UserError
from rgbd2avatar.logs import progress, progress_callback
from rgbd2avatar.workspace import Workspace

if TYPE_CHECKING:
    from fitting.pina.config import PinaConfig

log = logging.getLogger(__name__)


def run_stage(
    workspace: Workspace,
    stage: str,
    inputs: Iterable[Path | str],
    params: Mapping[str, Any],
    outputs: Iterable[Path | str],
    work: Callable[[], Any],
    force: bool = False,
) -> bool:
    """Run ``work`` unless ``stage`` is up to date for these inputs and parameters, then record it.

    Returns:
        True when the stage ran, False when it was up to date and skipped.
    """
    inputs = list(inputs)
    reason = "forced" if force else workspace.stale_reason(stage, inputs, params)
    if reason is None:
        log.info("%s is up to date; skipping it (use --force to run it again)", stage)
        return False
    log.info("%s: running (%s)", stage, reason)
    started = time.time()
    work()
    workspace.record(stage, inputs, params, list(outputs), started=started)
    return True


def import_stage(
    source: Path, subject: Path, max_frames: int | None = None, force: bool = False
) -> Workspace:
    """Import a recording (Azure Kinect MKV, image folder or sequence) into ``subject/recording``."""
    from capture.importer import import_recording

    workspace = Workspace.create(subject)
    destination = workspace.root / "recording"
    run_stage(
        workspace,
        "recording",
        [source.absolute()],
        {"max_frames": max_frames},
        [destination],
        lambda: import_recording(
            source, destination, max_frames=max_frames, progress=_bar("import"), overwrite=True
        ),
        force,
    )
    return workspace


def preprocess_stage(
    subject: Path,
    stride: int | None,
    max_frames: int | None,
    mask_dir: Path | None,
    force: bool = False,
    normal_window: int | None = None,
    normal_method: str | None = None,
) -> Workspace:
    """Per-frame person points, normals and colours from ``subject/recording`` into ``subject/preprocess``.

    ``stride`` / ``max_frames`` / ``normal_window`` / ``normal_method`` None keep the
    preprocessing defaults (about 10 fps, at most 600 frames, :class:`capture.preprocess.PreprocessOptions`'
    normals).
    """
    from capture.normals import check_method, check_window
    from capture.preprocess import DEFAULT_MAX_FRAMES, PreprocessOptions, preprocess

    chosen = {"normal_window": normal_window, "normal_method": normal_method}
    options = PreprocessOptions(**{key: value for key, value in chosen.items() if value is not None})
    for flag, check, value in (
        ("--normal-window", check_window, options.normal_window),
        ("--normal-method", check_method, options.normal_method),
    ):
        try:
            check(value)
        except ValueError as error:
            raise UserError(f"{flag}: {error}.") from None
    workspace = Workspace(subject)
    recording, out = workspace.root / "recording", workspace.root / "preprocess"
    max_frames = DEFAULT_MAX_FRAMES if max_frames is None else max_frames
    inputs = [recording] + ([mask_dir.absolute()] if mask_dir else [])
    params = {
        "stride": stride,
        "max_frames": max_frames,
        "masks": str(mask_dir) if mask_dir else None,
        "normal_window": options.normal_window,
        "normal_method": options.normal_method,
    }

    def work() -> None:
        with progress_callback("preprocess") as report:
            preprocess(
                recording, out, stride=stride, max_frames=max_frames, mask_dir=mask_dir, progress=report,
                options=options,
            )  # fmt: skip

    run_stage(workspace, "preprocess", inputs, params, [out], work, force)
    return workspace


DATA_TERMS = ("keypoints", "densepose", "icp")


def fit_body_stage(
    subject: Path,
    body_model: str = "anny",
    model_dir: Path | None = None,
    gender: str = "neutral",
    keypoints: Path | None = None,
    densepose: Path | None = None,
    densepose_uv: Path | None = None,
    terms: tuple[str, ...] = DATA_TERMS,
    device: str = "auto",
    force: bool = False,
    correct_depth: bool = True,
) -> Workspace:
    """Per-frame body pose and one shape from ``subject/preprocess`` (+ keypoints, DensePose);
    ``correct_depth``: :attr:`fitting.body_fit.FitOptions.correct_depth`."""
    from dataclasses import asdict, replace

    from fitting import priors
    from fitting.body_fit import FitOptions, FitWeights
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.body_fit_stage import run_body_fit
    from rgbd2avatar.devices import resolve_device

    workspace = Workspace(subject)
    weights = replace(FitWeights(), **{term: 0.0 for term in DATA_TERMS if term not in terms})
    options = FitOptions(correct_depth=correct_depth, device=str(resolve_device(device)))
    detectors = (("keypoints", keypoints), ("densepose", densepose), ("densepose_uv", densepose_uv))
    extra = [path.absolute() for _, path in detectors if path is not None]
    inputs = [workspace.root / "preprocess", workspace.root / "recording", *extra]
    params = {
        "body_model": body_model, "gender": gender, "model_dir": str(model_dir) if model_dir else None,
        "weights": asdict(weights), "options": {**asdict(options), "device": None},
        "terms": list(terms), "correct_depth": correct_depth,
        "pose_prior_scales": priors.pose_prior_scales().tolist(),
        **{name: str(path.absolute()) if path else None for name, path in detectors},
    }  # fmt: skip

    def work() -> None:
        body = load_body_model(body_model, model_dir, gender)
        with progress_callback("fit-body") as report:
            run_body_fit(workspace.root, body, keypoints, densepose, densepose_uv, weights, options, report)

    run_stage(workspace, "body_fit", inputs, params, [workspace.root / "body_fit"], work, force)
    return workspace


def recorded_params(subject: Path, stage: str) -> dict[str, Any] | None:
    """The parameters ``stage`` last ran with in the subject's manifest, or None if it never ran."""
    record = Workspace(subject).stage_record(stage)
    return None if record is None else dict(record.params)


def earlier_stages(subject: Path, device: str = "auto", **fit_body_options: Any) -> None:
    """Bring ``preprocess`` and ``fit-body`` up to date, re-using the parameters they last ran with.

    ``fit_body_options`` (keypoints, densepose, densepose_uv, terms, body_model, model_dir,
    gender, correct_depth) replace the recorded ones where given (not None).
    """
    workspace = Workspace(subject)
    if not (workspace.root / "recording").is_dir():
        raise UserError(f"{subject} has no recording; run `rgbd2avatar import SOURCE {subject}` first.")
    pre = recorded_params(subject, "preprocess") or {}
    masks = pre.get("masks")
    preprocess_stage(
        subject, pre.get("stride"), pre.get("max_frames"), Path(masks) if masks else None,
        normal_window=pre.get("normal_window"), normal_method=pre.get("normal_method"),
    )  # fmt: skip
    recorded = recorded_params(subject, "body_fit") or {}
    chosen = {key: value for key, value in fit_body_options.items() if value is not None}
    merged = {key: recorded.get(key) for key in FIT_BODY_OPTIONS} | chosen
    paths = {key: Path(merged[key]) if merged.get(key) else None for key in _DETECTOR_KEYS + ("model_dir",)}
    fit_body_stage(
        subject,
        body_model=merged.get("body_model") or "anny",
        gender=merged.get("gender") or "neutral",
        terms=tuple(merged.get("terms") or DATA_TERMS),
        device=device,
        correct_depth=merged.get("correct_depth", True) is not False,
        **paths,
    )


_DETECTOR_KEYS = ("keypoints", "densepose", "densepose_uv")
FIT_BODY_OPTIONS = (*_DETECTOR_KEYS, "terms", "body_model", "model_dir", "gender", "correct_depth")
"""Options of ``fit-body`` that ``fit`` passes through or takes from the manifest."""


def pina_stage(subject: Path, config: PinaConfig, device: str = "auto", force: bool = False) -> Workspace:
    """Optimise the PINA avatar on ``subject`` (fit-body must be up to date) into ``subject/pina``."""
    from capture.files import load_npz
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.devices import resolve_device
    from rgbd2avatar.pina_stage import run_pina

    workspace = Workspace(subject)
    body_fit = recorded_params(subject, "body_fit")
    if body_fit is None or not (workspace.root / "body_fit" / "fits.npz").exists():
        raise UserError(f"{subject} has no body fit; run `rgbd2avatar fit-body {subject}` first.")
    name = str(load_npz(workspace.root / "body_fit" / "fits.npz")["body_model"])
    model_dir, gender = body_fit.get("model_dir"), body_fit.get("gender") or "neutral"
    inputs = [workspace.root / "body_fit", workspace.root / "preprocess"]
    resolved = resolve_device(device)

    def work() -> None:
        body = load_body_model(name, Path(model_dir) if model_dir else None, gender)
        with progress_callback("fit (PINA)") as report:
            run_pina(workspace.root, body, config, resolved, model_dir, gender, report)

    outputs = [workspace.root / "pina" / name for name in ("avatar.pt", "poses.npz", "canonical.ply")]
    run_stage(workspace, "pina", inputs, {"config": config.to_dict()}, outputs, work, force)
    return workspace


def _bar(description: str) -> Callable[[Iterable[Any], int | None], Iterable[Any]]:
    """A progress callable ``(iterable, total) → iterable`` for the capture package."""
    return lambda iterable, total=None: progress(iterable, total=total, description=description)


def _avatar_file(workspace: Workspace) -> Path:
    """The workspace's fitted avatar, ``pina/avatar.pt``; UserError when there is none."""
    path = workspace.root / "pina" / "avatar.pt"
    if not path.is_file():
        raise UserError(
            f"{path} does not exist; fit the avatar first with `rgbd2avatar fit {workspace.root}`."
        )
    return path


def extract_stage(
    subject: Path, resolution: int = 256, exact: bool = False, device: str = "auto", force: bool = False
) -> Workspace:
    """Mesh the fitted avatar into ``subject/meshes``: canonical surface and every training frame."""
    from rgbd2avatar.animation import check_resolution, extract_meshes
    from rgbd2avatar.avatar.store import load_avatar
    from rgbd2avatar.devices import resolve_device

    check_resolution(resolution)
    workspace = Workspace(subject)
    avatar_path = _avatar_file(workspace)
    resolved = resolve_device(device)
    out = workspace.root / "meshes"
    outputs = [out / "canonical.ply", out / "frames", out / "extract.json"]

    def work() -> None:
        extract_meshes(load_avatar(avatar_path, resolved), out, resolution, exact)

    run_stage(
        workspace, "meshes", [avatar_path], {"resolution": resolution, "exact": exact}, outputs, work, force
    )
    return workspace


def animate_stage(
    subject: Path,
    motion: str,
    fps: float | None = None,
    frames: tuple[int | None, int | None] | None = None,
    exact: bool = False,
    resolution: int = 128,
    mesh_format: str = "ply",
    out: Path | None = None,
    device: str = "auto",
    force: bool = False,
    pose_condition: str = "mean",
) -> Path:
    """Drive the fitted avatar with a motion (built-in name or AMASS file) into
    ``subject/animation/<motion name>`` (or ``out``); returns that folder. ``pose_condition``:
    see :data:`rgbd2avatar.animation.POSE_CONDITIONS`.

    The manifest's ``animation`` entry is the last motion animated. After ``texture``, the rigged
    glTF carries the texture (on the texture's UV-mapped canonical mesh).
    """
    from rgbd2avatar.animation import MESH_FORMATS, POSE_CONDITIONS, animate_avatar, check_resolution
    from rgbd2avatar.avatar.store import load_avatar
    from rgbd2avatar.devices import resolve_device
    from rgbd2avatar.motion import BUILTIN_MOTIONS, load_motion

    check_resolution(resolution)
    if mesh_format not in MESH_FORMATS:
        raise UserError(f"--format {mesh_format!r} is not supported: use {' or '.join(MESH_FORMATS)}.")
    if pose_condition not in POSE_CONDITIONS:
        raise UserError(f"--pose-condition {pose_condition!r}: use {' or '.join(POSE_CONDITIONS)}.")
    workspace = Workspace(subject)
    avatar_path = _avatar_file(workspace)
    clip = load_motion(motion, fps=fps, frames=frames)
    resolved = resolve_device(device)
    folder = (out if out is not None else workspace.root / "animation" / clip.name).absolute()
    builtin = motion in BUILTIN_MOTIONS
    texture_dir = workspace.root / "texture"
    textured = (texture_dir / "atlas.npz").is_file()
    inputs = [avatar_path] + ([] if builtin else [Path(motion).absolute()])
    inputs += [texture_dir / "atlas.npz", texture_dir / "texture.png"] if textured else []
    params = {
        "motion": motion if builtin else str(Path(motion).absolute()), "fps": fps, "frames": frames,
        "exact": exact, "resolution": resolution, "format": mesh_format, "out": str(folder),
        "pose_condition": pose_condition,
    }  # fmt: skip

    def work() -> None:
        animate_avatar(
            load_avatar(avatar_path, resolved), clip, folder, resolution, exact, mesh_format,
            texture_dir if textured else None, pose_condition,
        )  # fmt: skip

    run_stage(workspace, "animation", inputs, params, [folder], work, force)
    return folder


if TYPE_CHECKING:
    from rgbd2avatar.pixel_renderer import RenderOptions
    from rgbd2avatar.texture import TextureOptions


def texture_stage(
    subject: Path,
    options: TextureOptions | None = None,
    render_options: RenderOptions | None = None,
    device: str = "auto",
    force: bool = False,
) -> Workspace:
    """Bake the avatar's texture from the recording's colour frames and train the pixel-aligned
    renderer's blender on them, into ``subject/texture``."""
    from rgbd2avatar.animation import check_resolution
    from rgbd2avatar.avatar.store import load_avatar
    from rgbd2avatar.devices import resolve_device
    from rgbd2avatar.pixel_renderer import RenderOptions, fit_blender
    from rgbd2avatar.texture import TEXTURE_FILES, TextureOptions, texture_avatar

    options = options or TextureOptions()
    render_options = render_options or RenderOptions()
    check_resolution(options.resolution)
    workspace = Workspace(subject)
    avatar_path = _avatar_file(workspace)
    recording = workspace.root / "recording"
    if not recording.is_dir():
        raise UserError(f"{subject} has no recording; import one with `rgbd2avatar import SOURCE {subject}`.")
    resolved = resolve_device(device)
    out = workspace.root / "texture"
    names = (*TEXTURE_FILES, "texture.json", "blender.pt", "blender.json")
    params = {"texture": options.to_dict(), "blender": render_options.to_dict()}

    def work() -> None:
        stored = load_avatar(avatar_path, resolved)
        texture_avatar(stored, recording, out, options)
        fit_blender(stored, recording, out, render_options)

    run_stage(workspace, "texture", [avatar_path, recording], params, [out / n for n in names], work, force)
    return workspace


def render_stage(
    subject: Path,
    motion: str,
    camera: str = "orbit",
    method: str = "pixel",
    fps: float | None = None,
    frames: tuple[int | None, int | None] | None = None,
    out: Path | None = None,
    device: str = "auto",
) -> Path:
    """Render the textured avatar driven by a motion into ``subject/texture/renders/<motion>-<camera>``
    (or ``out``); returns that folder. Renders are views, not a pipeline stage: the manifest does
    not record them, and every call renders again."""
    from rgbd2avatar.avatar.store import load_avatar
    from rgbd2avatar.devices import resolve_device
    from rgbd2avatar.motion import load_motion
    from rgbd2avatar.pixel_renderer import CAMERAS, METHODS, render_motion

    if method not in METHODS:
        raise UserError(f"--method {method!r} is not one of {', '.join(METHODS)}; pick one of those.")
    workspace = Workspace(subject)
    avatar_path = _avatar_file(workspace)
    texture_dir = workspace.root / "texture"
    if workspace.stage_record("texture") is None or not (texture_dir / "blender.pt").is_file():
        raise UserError(f"{texture_dir} has no texture; run `rgbd2avatar texture {subject}` first.")
    clip = load_motion(motion, fps=fps, frames=frames)
    view = camera if camera in CAMERAS else Path(camera).stem
    folder = (out if out is not None else texture_dir / "renders" / f"{clip.name}-{view}").absolute()
    stored = load_avatar(avatar_path, resolve_device(device))
    render_motion(stored, texture_dir, workspace.root / "recording", clip, camera, folder, method)
    return folder
