"""The ``rgbd2avatar`` command line: thin commands that wire the stages together.

Conventions for every command:

- register it with ``@command()`` (not ``@app.command()``): its body then runs inside the one
  error handler — a :class:`~rgbd2avatar.errors.UserError` or
  :class:`~capture.errors.CaptureError` prints its message as one red line on stderr and exits
  with code 2, without a traceback (``-v`` adds the traceback as a debug log);
- import stage packages inside the function, so ``rgbd2avatar --help`` stays fast (no torch);
- every option has a help string and a default;
- logs, progress and summaries go to stderr (:mod:`rgbd2avatar.logs`), results to stdout.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from capture.errors import CaptureError
from rgbd2avatar import __version__
from rgbd2avatar.errors import UserError
from rgbd2avatar.logs import console, setup_logging

if TYPE_CHECKING:
    from rich.table import Table

    from rgbd2avatar.workspace import Workspace

USER_ERROR_EXIT_CODE = 2
"""Exit code of a command stopped by a UserError or CaptureError."""

Command = TypeVar("Command", bound=Callable[..., Any])

app = typer.Typer(
    name="rgbd2avatar",
    help="Animatable, textured 3D avatars from one person's RGB-D video (PINA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
_log = logging.getLogger(__name__)


def command(name: str | None = None, **options: Any) -> Callable[[Command], Command]:
    """Register a function as a subcommand whose user errors end in one line and exit code 2."""

    def register(function: Command) -> Command:
        app.command(name, **options)(_reporting_user_errors(function))
        return function

    return register


def _reporting_user_errors(function: Command) -> Command:
    """Wrap ``function`` so UserError/CaptureError print one red stderr line and exit with code 2."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (UserError, CaptureError) as error:
            _log.debug("traceback of the error below", exc_info=True)
            console.print(f"error: {error}", style="red", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=USER_ERROR_EXIT_CODE) from None

    return cast(Command, run)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"rgbd2avatar {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show debug logs, and tracebacks of user errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Animatable, textured 3D avatars from one person's RGB-D video (PINA)."""
    setup_logging(verbose)


@command()
def status(
    subject: Annotated[Path, typer.Argument(help="Subject workspace directory.")] = Path("."),
) -> None:
    """Show each stage of a subject workspace: up to date or why not, outputs, when it ran."""
    from rich.console import Console

    from rgbd2avatar.workspace import Workspace

    Console().print(_status_table(Workspace(subject)))


def _status_table(workspace: Workspace) -> Table:
    """A rich Table with one row per stage of ``workspace``."""
    from rich.markup import escape
    from rich.table import Table

    from rgbd2avatar.workspace import STAGES

    table = Table(title=escape(f"Subject {workspace.root}"))
    for column in ("stage", "up to date", "outputs", "finished"):
        table.add_column(column)
    for stage in STAGES:
        record = workspace.stage_record(stage)
        if record is None:
            table.add_row(stage, "not run", "", "")
            continue
        reason = workspace.stale_reason(stage)
        state = "[green]yes[/]" if reason is None else f"[yellow]no[/]: {escape(reason)}"
        table.add_row(stage, state, escape("\n".join(record.outputs)), _local_time(record.finished))
    return table


def _local_time(iso: str) -> str:
    """``YYYY-MM-DD HH:MM`` in local time of an ISO 8601 timestamp."""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


BodyModelOption = Annotated[
    str, typer.Option("--body-model", "-b", help="Body model: anny (free, default) or smpl.")
]
ModelDirOption = Annotated[
    Path | None, typer.Option("--model-dir", help="Folder with your SMPL model files (smpl only).")
]
GenderOption = Annotated[str, typer.Option("--gender", help="SMPL gender: neutral, male or female.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda or cuda:N.")]
MotionOption = Annotated[str, typer.Option("--motion", "-m", help="Built-in motion name or AMASS .npz file.")]
FpsOption = Annotated[float | None, typer.Option("--fps", help="Resample the motion to this frame rate.")]
FramesOption = Annotated[str | None, typer.Option("--frames", help="Frame range A:B (after resampling).")]


@command("body-info")
def body_info(
    body_model: BodyModelOption = "anny",
    model_dir: ModelDirOption = None,
    gender: GenderOption = "neutral",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild the cached anny model.")] = False,
) -> None:
    """Load (building once if needed) a body model and print its size, shape parameters and joints."""
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.body.skeleton import JOINT_NAMES
    from rgbd2avatar.logs import Timer, stage_summary

    with Timer() as timer:
        if rebuild and body_model == "anny":
            from rgbd2avatar.body.anny_model import load_anny_arrays

            load_anny_arrays(rebuild=True)
        body = load_body_model(body_model, model_dir, gender)
    _, joints = body.rest()
    typer.echo(f"{body.name}: {body.num_vertices} vertices, {body.faces.shape[0]} triangles, 24 joints")
    defaults = zip(body.shape_names, body.default_shape.tolist(), strict=True)
    typer.echo("shape parameters: " + ", ".join(f"{name}={value:.2f}" for name, value in defaults))
    for name, position in zip(JOINT_NAMES, joints[0].tolist(), strict=True):
        typer.echo(f"  {name:15s} " + " ".join(f"{x:+.3f}" for x in position))
    stage_summary("body-info", f"loaded {body.name}", timer.seconds)


@command("pose-body")
def pose_body(
    out: Annotated[Path, typer.Argument(help="Output folder for the posed meshes and the preview.")],
    motion: MotionOption = "walk",
    fps: FpsOption = None,
    frames: FramesOption = None,
    shape: Annotated[
        list[str] | None, typer.Option("--shape", help="Shape parameter NAME=VALUE (repeatable).")
    ] = None,
    body_model: BodyModelOption = "anny",
    model_dir: ModelDirOption = None,
    gender: GenderOption = "neutral",
    mesh_format: Annotated[str, typer.Option("--format", help="Mesh file format: ply or obj.")] = "ply",
    device: DeviceOption = "auto",
) -> None:
    """Drive a body model with a motion: one mesh per frame and a front/side preview sheet."""
    from capture.files import write_json
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.devices import resolve_device
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.motion import load_motion, parse_frame_range, save_amass
    from rgbd2avatar.posing import motion_sheet, parse_shape, write_posed_meshes

    if mesh_format not in ("ply", "obj"):
        raise UserError(f"--format {mesh_format!r} is not supported: use ply or obj.")
    with Timer() as timer:
        clip = load_motion(motion, fps=fps, frames=parse_frame_range(frames) if frames else None)
        body = load_body_model(body_model, model_dir, gender).to(resolve_device(device))
        body_shape = parse_shape(body, shape or [])
        paths = write_posed_meshes(body, clip, out / "meshes", body_shape, suffix=f".{mesh_format}")
        motion_sheet(body, clip, out / "preview.png", body_shape)
        save_amass(clip, out / "motion.npz")
        write_json(
            out / "body.json",
            {"body_model": body.name, "shape": dict(zip(body.shape_names, body_shape.tolist(), strict=True))},
        )
    stage_summary(
        "pose-body",
        f"{len(paths)} {body.name} meshes of {clip.name!r}",
        timer.seconds,
        f"{len(paths) / timer.seconds:.1f} meshes/s",
        f"see {out / 'preview.png'}",
    )


@command("export-motion")
def export_motion(
    motion: Annotated[str, typer.Argument(help="Built-in motion name or AMASS .npz file.")],
    out: Annotated[Path, typer.Argument(help="AMASS-style .npz file to write (SMPL layout, 72 poses).")],
    fps: FpsOption = None,
    frames: FramesOption = None,
) -> None:
    """Write a motion (e.g. a built-in one) as an AMASS-style .npz that any tool can read."""
    from rgbd2avatar.motion import load_motion, parse_frame_range, save_amass

    clip = load_motion(motion, fps=fps, frames=parse_frame_range(frames) if frames else None)
    save_amass(clip, out)
    typer.echo(f"{out}: {clip.num_frames} frames at {clip.fps:g} fps ({clip.duration:.2f} s)")


ForceOption = Annotated[bool, typer.Option("--force", help="Run the stage even if it is up to date.")]


@command()
def capture(
    subject: Annotated[Path, typer.Argument(help="Subject workspace to record into (created if missing).")],
    duration: Annotated[
        float | None, typer.Option("--duration", help="Seconds to record (default: until Ctrl-C).")
    ] = None,
    fps: Annotated[int, typer.Option("--fps", help="Camera frame rate: 5, 15 or 30.")] = 30,
    depth_mode: Annotated[
        str,
        typer.Option("--depth-mode", help="nfov_unbinned, nfov_2x2binned, wfov_2x2binned or wfov_unbinned."),
    ] = "nfov_unbinned",
    color_resolution: Annotated[
        str, typer.Option("--color-resolution", help="720p, 1080p, 1440p, 1536p, 2160p or 3072p.")
    ] = "720p",
    countdown: Annotated[
        float, typer.Option("--countdown", help="Seconds to count down before recording.")
    ] = 3.0,
    device_id: Annotated[int, typer.Option("--device-id", help="Which connected Azure Kinect.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier raw recording.")] = False,
) -> None:
    """Record an Azure Kinect (kinect extra + Microsoft's SDK), then import it; Ctrl-C stops cleanly."""
    from capture.kinect import check_modes, record
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.stages import import_stage

    check_modes(fps, depth_mode, color_resolution, duration)
    raw = subject.absolute() / "raw"
    with Timer() as timer:
        summary = record(
            raw, duration, fps=fps, depth_mode=depth_mode, color_resolution=color_resolution,
            countdown=countdown, device_id=device_id, overwrite=overwrite, on_status=_recording_status(),
        )  # fmt: skip
        import_stage(summary.mkv, subject, force=True)
    how = "stopped with Ctrl-C" if summary.interrupted else "complete"
    stage_summary(
        "capture", f"{summary.frames} frames ({summary.seconds:.1f} s, {how})", timer.seconds,
        f"{summary.dropped} dropped", f"raw MKV {summary.mkv}",
    )  # fmt: skip


def _recording_status():
    """A status callback for :func:`capture.kinect.record` that shows the countdown and, four
    times a second at most, the frames recorded so far."""
    import time

    from rgbd2avatar.logs import console

    shown = {"at": 0.0}

    def show(status) -> None:
        if status.phase == "countdown":
            console.print(f"recording in {status.countdown_left:.0f} …")
            return
        now = time.monotonic()
        if now - shown["at"] >= 0.25:
            shown["at"] = now
            line = f"recording: {status.frames} frames, {status.seconds:.1f} s, {status.dropped} dropped"
            console.print(line + " (Ctrl-C stops)", end="\r")

    return show


@command("import")
def import_command(
    source: Annotated[
        Path, typer.Argument(help="Azure Kinect .mkv, a folder of depth/colour images, or a sequence folder.")
    ],
    subject: Annotated[Path, typer.Argument(help="Subject workspace to import into (created if missing).")],
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", help="Import at most this many frames.")
    ] = None,
    force: ForceOption = False,
) -> None:
    """Import a recording into a subject workspace as an RGB-D sequence (no Azure Kinect SDK needed)."""
    from capture.sequence import SequenceReader
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.stages import import_stage

    if not source.exists():
        raise UserError(f"{source} does not exist; pass an Azure Kinect .mkv file or a folder of images.")
    with Timer() as timer:
        workspace = import_stage(source, subject, max_frames, force)
    frames = len(SequenceReader(workspace.root / "recording"))
    stage_summary(
        "import",
        f"{frames} frames from {source}",
        timer.seconds,
        f"sequence in {workspace.root / 'recording'}",
    )


@command()
def preprocess(
    subject: Annotated[Path, typer.Argument(help="Subject workspace with an imported recording.")],
    stride: Annotated[
        int | None,
        typer.Option("--stride", help="Keep every N-th frame (default: about 10 frames per second)."),
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", help="At most this many frames, evenly spread (600).")
    ] = None,
    masks: Annotated[
        Path | None, typer.Option("--masks", help="Folder of person masks (PNG, depth-image pixels) to use.")
    ] = None,
    normal_window: Annotated[
        int | None,
        typer.Option(
            "--normal-window",
            help="Pixels per side of the normals' window (odd; 7 suits the Azure Kinect's noise, "
            "3 noise-free depth).",
        ),
    ] = None,
    normal_method: Annotated[
        str | None,
        typer.Option(
            "--normal-method",
            help="How normals are estimated: pca (default) or rays (a plane fitted to inverse depth "
            "along the camera's rays: unbiased under depth noise, better reconstructions of the "
            "captured frames).",
        ),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Back-project depth to person points with colours and normals, frame by frame."""
    from capture.files import read_json
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.stages import preprocess_stage

    with Timer() as timer:
        workspace = preprocess_stage(subject, stride, max_frames, masks, force, normal_window, normal_method)
    index = read_json(workspace.root / "preprocess" / "index.json")
    stage_summary(
        "preprocess", f"{len(index['frames'])} frames", timer.seconds, f"in {workspace.root / 'preprocess'}"
    )


@command("fit-body")
def fit_body_command(
    subject: Annotated[Path, typer.Argument(help="Subject workspace with preprocessed frames.")],
    keypoints: Annotated[
        Path | None,
        typer.Option("--keypoints", help="OpenPose --write_json folder (BODY_25) or COCO-17 results .json."),
    ] = None,
    densepose: Annotated[
        Path | None,
        typer.Option("--densepose", help="Folder of DensePose IUV images NNNNNN.png (colour image)."),
    ] = None,
    densepose_uv: Annotated[
        Path | None,
        typer.Option("--densepose-uv", help="DensePose's UV_Processed.mat (SMPL with detectron2 IUV)."),
    ] = None,
    terms: Annotated[
        str, typer.Option("--terms", help="Data terms to use, comma-separated: keypoints, densepose, icp.")
    ] = "keypoints,densepose,icp",
    body_model: BodyModelOption = "anny",
    model_dir: ModelDirOption = None,
    gender: GenderOption = "neutral",
    device: DeviceOption = "auto",
    force: ForceOption = False,
    depth_correction: Annotated[
        bool,
        typer.Option(
            "--depth-correction/--no-depth-correction",
            help="Estimate how far loose clothing pulled the body towards the camera (from the views of "
            "a turning subject) and fit again behind a clothing layer that thick.",
        ),
    ] = True,
) -> None:
    """Fit the body model to every preprocessed frame: one shape, per-frame pose and translation."""
    from capture.files import read_json
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.stages import DATA_TERMS, fit_body_stage

    chosen = tuple(t.strip() for t in terms.split(",") if t.strip())
    unknown = sorted(set(chosen) - set(DATA_TERMS))
    if unknown or not chosen:
        raise UserError(f"--terms {terms!r}: choose among {', '.join(DATA_TERMS)}.")
    for path, option in (
        (keypoints, "--keypoints"),
        (densepose, "--densepose"),
        (densepose_uv, "--densepose-uv"),
    ):
        if path is not None and not path.exists():
            raise UserError(f"{option} {path} does not exist; check the path.")
    with Timer() as timer:
        workspace = fit_body_stage(
            subject, body_model, model_dir, gender, keypoints, densepose, densepose_uv, chosen, device, force,
            depth_correction,
        )  # fmt: skip
    summary = read_json(workspace.root / "body_fit" / "fit.json")
    overlays = workspace.root / "body_fit" / "overlays"
    details = (
        f"{summary['reinitialised']} re-initialised",
        clothing_summary(summary["clothing_layer_m"]),
        f"overlays in {overlays}",
    )
    stage_summary("fit-body", f"{summary['frames']} frames", timer.seconds, *details)


def clothing_summary(layer: dict[str, float]) -> str:
    """``fit-body``'s clothing layer by region in words, e.g. "clothing layer 2.6 cm lower, 2.1 cm upper"."""
    if not layer:
        return "no clothing layer"
    return "clothing layer " + ", ".join(
        f"{100 * metres:.1f} cm {region}" for region, metres in layer.items()
    )


@command()
def fit(
    subject: Annotated[Path, typer.Argument(help="Subject workspace with a recording (see `import`).")],
    preset: Annotated[
        str, typer.Option("--preset", "-p", help="fast (CPU demo), default, or quality (for a GPU).")
    ] = "default",
    steps: Annotated[
        int | None, typer.Option("--steps", help="Joint-optimisation steps (default: the preset's).")
    ] = None,
    pretrain_steps: Annotated[
        int | None, typer.Option("--pretrain-steps", help="Pretraining steps (default: the preset's).")
    ] = None,
    pose_opt: Annotated[
        bool, typer.Option("--pose-opt/--no-pose-opt", help="Refine every frame's pose with the shape.")
    ] = True,
    max_points: Annotated[
        int | None,
        typer.Option("--max-points", help="Observed points kept per frame (default: the preset's, 4000)."),
    ] = None,
    weight: Annotated[
        list[str] | None,
        typer.Option(
            "--weight",
            help="Loss weight NAME=VALUE (repeatable): sdf, normal, off, eikonal, skinning or pose "
            "(meanings and defaults: LossWeights in fitting/pina/config.py).",
        ),
    ] = None,
    keypoints: Annotated[
        Path | None, typer.Option("--keypoints", help="For fit-body (default: what it last used).")
    ] = None,
    densepose: Annotated[
        Path | None, typer.Option("--densepose", help="For fit-body (default: what it last used).")
    ] = None,
    body_model: Annotated[
        str | None,
        typer.Option("--body-model", "-b", help="anny or smpl (default: what fit-body last used)."),
    ] = None,
    model_dir: ModelDirOption = None,
    device: DeviceOption = "auto",
    force: ForceOption = False,
) -> None:
    """Fit the animatable avatar (PINA): runs preprocess and fit-body if they are not up to date, then
    optimises the canonical SDF, the skinning field and every frame's pose; resumes after an interruption."""
    from dataclasses import fields, replace

    from capture.files import read_json
    from fitting.pina import config as pina_config
    from rgbd2avatar.logs import Timer, format_duration, stage_summary
    from rgbd2avatar.options import parse_assignments
    from rgbd2avatar.stages import earlier_stages, pina_stage

    if preset not in pina_config.PRESETS:
        raise UserError(f"--preset {preset!r}: choose one of {', '.join(pina_config.PRESETS)}.")
    if min(steps or 0, pretrain_steps or 0) < 0:
        raise UserError("--steps and --pretrain-steps must be zero or more.")
    if max_points is not None and max_points < 1:
        raise UserError("--max-points must be one or more.")
    for path, option in ((keypoints, "--keypoints"), (densepose, "--densepose")):
        if path is not None and not path.exists():
            raise UserError(f"{option} {path} does not exist; check the path.")
    weights = pina_config.PRESETS[preset].weights
    names = [field.name for field in fields(weights)]
    weights = replace(weights, **parse_assignments("--weight", weight or [], names))
    if min(vars(weights).values()) < 0:
        raise UserError("--weight values must be zero or more.")
    config = pina_config.preset(
        preset, joint_steps=steps, pretrain_steps=pretrain_steps, optimise_poses=pose_opt, weights=weights,
        max_points=max_points,
    )  # fmt: skip
    with Timer() as timer:
        earlier_stages(
            subject,
            device,
            keypoints=keypoints,
            densepose=densepose,
            body_model=body_model,
            model_dir=model_dir,
        )
        try:
            workspace = pina_stage(subject, config, device, force)
        except KeyboardInterrupt:
            console.print(
                f"interrupted; the last checkpoint is in {subject / 'pina'}: run the same command to resume.",
                style="yellow", markup=False, highlight=False,
            )  # fmt: skip
            raise typer.Exit(code=130) from None
    summary = read_json(workspace.root / "pina" / "train.json")
    per_step = format_duration(summary["seconds_per_step"])
    details = (
        f"{summary['steps']} steps, {per_step}/step on {summary['device']}",
        f"mesh {workspace.root / 'pina' / 'canonical.ply'}",
    )
    stage_summary("fit", f"avatar of {summary['frames']} frames", timer.seconds, *details)


@command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder: OUT/sequence (RGB-D) and OUT/ground_truth.")],
    subject: Annotated[
        str, typer.Option("--subject", "-s", help="Subject preset: casual, loose or athletic.")
    ] = "casual",
    motion: MotionOption = "capture",
    frames: Annotated[
        int | None, typer.Option("--frames", "-n", help="Number of frames (default: the whole motion).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for colours, room and sensor noise.")] = 0,
    distance: Annotated[
        float, typer.Option("--distance", help="Camera-to-subject distance in metres.")
    ] = 2.2,
    figure: Annotated[
        int | None, typer.Option("--figure", help="Also save OUT/frame_NNNNNN.png showing this frame.")
    ] = None,
) -> None:
    """Film a synthetic clothed subject with a virtual Azure Kinect: the sequence and its ground truth."""
    from capture.files import write_image
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.synth.figure import frame_figure
    from rgbd2avatar.synth.generate import SynthOptions, synthesize

    if not 1.5 <= distance <= 3.5:
        raise UserError(
            f"--distance {distance} is outside the 1.5–3.5 m a person is filmed from; pick one inside."
        )
    with Timer() as timer:
        options = SynthOptions(subject=subject, motion=motion, frames=frames, seed=seed, distance=distance)
        summary = synthesize(out, options)
    if figure is not None:
        write_image(out / f"frame_{figure:06d}.png", frame_figure(out, figure))
    stage_summary(
        "synth", f"{summary['frames']} frames of {subject!r} doing {summary['motion']!r}", timer.seconds,
        f"{summary['frames'] / timer.seconds:.2f} frames/s", f"sequence in {out / 'sequence'}",
    )  # fmt: skip


@command()
def bench(
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            "-p",
            help="Benchmark: small (CPU), small_clean (small, noise-free depth) or full (GPU).",
        ),
    ] = "small",
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the benchmark's data and its JSON table.")
    ] = Path("bench_out"),
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="PINA preset instead of the protocol's (small: fast, full: quality)."),
    ] = None,
) -> None:
    """Run every stage that exists on the synthetic accuracy benchmark and write a JSON table."""
    from capture.files import write_json
    from fitting.pina.config import PRESETS
    from rgbd2avatar.bench import PROTOCOLS, run_benchmark
    from rgbd2avatar.logs import Timer, stage_summary

    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}.")
    if preset is not None and preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}.")
    with Timer() as timer:
        table = run_benchmark(protocol, out, preset)
    name = f"bench_{protocol}" + (f"_{preset}" if preset else "")
    write_json(out / f"{name}.json", table)
    typer.echo(f"body fit        {_numbers(table['body_fit'])}")
    for part in ("reconstruction", "animation"):
        for method, row in table[part].items():
            typer.echo(f"{part:15s} {method:20s} {_numbers(row)}")
    stage_summary("bench", f"protocol {protocol!r}", timer.seconds, f"table in {out / f'{name}.json'}")


def _numbers(row: dict) -> str:
    """``key=value, …`` of a table row's numbers (4 significant digits), other values left out."""
    return ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, (int, float)))


DEMO_FRAMES = 45
"""Frames of the demo's synthetic capture (one turn of the ``capture`` motion, 1.5 s at 30 fps)."""
DEMO_FIT_FRAMES = 8
"""Frames the demo preprocesses and fits (spread over the capture), to keep the demo short on a CPU."""
DEMO_MOTION, DEMO_MOTION_FPS, DEMO_MOTION_FRAMES = "walk", 10.0, (0, 17)
"""The motion the demo animates and renders the avatar with: one 1.6 s stride at 10 fps."""
DEMO_BLENDER_STEPS = 300
"""Training steps of the pixel-aligned renderer's blender in the demo (the command's default: 600)."""


@command()
def demo(
    out: Annotated[Path, typer.Argument(help="Directory for the demo's outputs.")] = Path("demo_out"),
    frames: Annotated[
        int, typer.Option("--frames", help="Frames of the synthetic capture (30 fps).")
    ] = DEMO_FRAMES,
    preset: Annotated[str, typer.Option("--preset", help="PINA preset of the avatar fit.")] = "fast",
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            help="Training steps of each PINA stage and of the renderer's blender "
            f"(default: the preset's, {DEMO_BLENDER_STEPS} for the blender).",
        ),
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Run every stage on the built-in subject (no camera needed), from the synthetic capture to
    the animated, textured avatar, and say where the outputs are."""
    from dataclasses import replace

    from capture.files import write_image
    from fitting.pina.config import preset as pina_preset
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.devices import resolve_device
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.motion import builtin_motion
    from rgbd2avatar.pixel_renderer import RenderOptions
    from rgbd2avatar.posing import body_pose_figure, motion_sheet, write_posed_meshes
    from rgbd2avatar.stages import (
        animate_stage,
        fit_body_stage,
        import_stage,
        pina_stage,
        preprocess_stage,
        render_stage,
        texture_stage,
    )
    from rgbd2avatar.synth.figure import frame_figure, subjects_figure
    from rgbd2avatar.synth.generate import SynthOptions, synthesize
    from rgbd2avatar.texture import TextureOptions

    subject = out / "subject"
    with Timer() as timer:
        body = load_body_model("anny").to(resolve_device(device))
        body_pose_figure(body, out / "body_poses.png")
        walk, walk_dir = builtin_motion("walk", seconds=1.6), out / "walk"
        write_posed_meshes(body, walk, walk_dir / "meshes")
        motion_sheet(body, walk, walk_dir / "preview.png")
        capture_dir = out / "capture"
        synthesize(capture_dir, SynthOptions(frames=frames))
        figure_frame = min(10, frames - 1)
        write_image(capture_dir / f"frame_{figure_frame:06d}.png", frame_figure(capture_dir, figure_frame))
        write_image(out / "subjects.png", subjects_figure())
        import_stage(capture_dir / "sequence", subject)
        preprocess_stage(subject, stride=None, max_frames=DEMO_FIT_FRAMES, mask_dir=None)
        truth = capture_dir / "ground_truth"
        fit_body_stage(
            subject, keypoints=truth / "keypoints" / "openpose", densepose=truth / "iuv", device=device
        )
        pina_stage(subject, pina_preset(preset, pretrain_steps=steps, joint_steps=steps), device)
        texture_options = TextureOptions(size=512, resolution=128)
        blender = replace(RenderOptions(), steps=DEMO_BLENDER_STEPS if steps is None else steps)
        texture_stage(subject, texture_options, blender, device)
        animation = animate_stage(
            subject, DEMO_MOTION, fps=DEMO_MOTION_FPS, frames=DEMO_MOTION_FRAMES, device=device
        )
        renders = render_stage(
            subject, DEMO_MOTION, "orbit", fps=DEMO_MOTION_FPS, frames=DEMO_MOTION_FRAMES, device=device
        )
    animation, renders = _relative(animation), _relative(renders)
    typer.echo(f"body poses (rest + 3 built-in poses, front and side): {out / 'body_poses.png'}")
    typer.echo(f"meshes of one walking stride: {walk_dir / 'meshes'}  (preview: {walk_dir / 'preview.png'})")
    typer.echo(
        f"synthetic Azure Kinect capture: {capture_dir / 'sequence'}  (truth: {capture_dir / 'ground_truth'})"
    )
    typer.echo(
        f"one captured frame (depth, colour, keypoints, IUV, mask): {capture_dir / 'frame_000010.png'}"
    )
    typer.echo(f"body fits drawn over the colour frames: {subject / 'body_fit' / 'overlays'}")
    typer.echo(f"the avatar's canonical mesh (PINA): {subject / 'pina' / 'canonical.ply'}")
    typer.echo(
        f"the avatar walking: {animation / 'preview.mp4'}  (meshes: {animation / 'meshes'}, "
        f"rigged and textured glTF: {animation / 'avatar.glb'})"
    )
    typer.echo(f"the textured avatar: {subject / 'texture' / 'avatar.glb'}")
    typer.echo(f"the textured avatar walking, seen from an orbiting camera: {renders / 'render.mp4'}")
    typer.echo(f"next: rgbd2avatar animate {subject} --motion YOUR_AMASS.npz")
    stage_summary("demo", "every stage, synthetic capture to textured animation", timer.seconds)


def _relative(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it, else as it is."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


ResolutionOption = Annotated[
    int, typer.Option("--resolution", "-r", help="Meshing grid cells per axis: 32 times a power of two.")
]
ExactOption = Annotated[
    bool,
    typer.Option(
        "--exact",
        help="Mesh every pose in posed space by correspondence search (the paper's way, much slower) "
        "instead of skinning the canonical mesh.",
    ),
]


@command()
def extract(
    subject: Annotated[Path, typer.Argument(help="Subject workspace with a fitted avatar (see `fit`).")],
    resolution: ResolutionOption = 256,
    exact: ExactOption = False,
    device: DeviceOption = "auto",
    force: ForceOption = False,
) -> None:
    """Mesh the fitted avatar: its canonical surface and every training frame in its refined pose."""
    from capture.files import read_json
    from rgbd2avatar.logs import Timer, format_duration, stage_summary
    from rgbd2avatar.stages import extract_stage

    with Timer() as timer:
        workspace = extract_stage(subject, resolution, exact, device, force)
    out = workspace.root / "meshes"
    summary = read_json(out / "extract.json")
    stage_summary(
        "extract", f"canonical + {summary['frames']} posed meshes ({summary['mode']}, {resolution}³)",
        timer.seconds, f"{format_duration(summary['seconds_per_mesh'])}/mesh", f"meshes in {out}",
    )  # fmt: skip


@command()
def animate(
    subject: Annotated[Path, typer.Argument(help="Subject workspace with a fitted avatar (see `fit`).")],
    motion: MotionOption,
    fps: FpsOption = None,
    frames: FramesOption = None,
    exact: ExactOption = False,
    resolution: ResolutionOption = 128,
    mesh_format: Annotated[str, typer.Option("--format", help="Mesh file format: ply or obj.")] = "ply",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: SUBJECT/animation/<motion name>)."),
    ] = None,
    pose_condition: Annotated[
        str,
        typer.Option(
            "--pose-condition",
            help="The SDF's pose condition: 'mean' (of the training poses; best for poses the "
            "avatar never saw) or 'own' (each frame's pose).",
        ),
    ] = "mean",
    device: DeviceOption = "auto",
    force: ForceOption = False,
) -> None:
    """Drive the fitted avatar with a motion: posed meshes, a preview video and sheet, a rigged glTF."""
    from capture.files import read_json
    from rgbd2avatar.logs import Timer, format_duration, stage_summary
    from rgbd2avatar.motion import parse_frame_range
    from rgbd2avatar.stages import animate_stage

    with Timer() as timer:
        folder = animate_stage(
            subject, motion, fps, parse_frame_range(frames) if frames else None, exact, resolution,
            mesh_format, out, device, force, pose_condition,
        )  # fmt: skip
    summary = read_json(folder / "animation.json")
    stage_summary(
        "animate", f"{summary['frames']} meshes of {summary['motion']!r} ({summary['mode']}, {resolution}³, "
        f"{summary['pose_condition']} pose condition)",
        timer.seconds, f"{format_duration(summary['seconds_per_mesh'])}/mesh",
        f"{summary['extractions']} MISE extractions", f"preview {folder / 'preview.mp4'}",
    )  # fmt: skip


@command()
def texture(
    subject: Annotated[Path, typer.Argument(help="Subject workspace with a fitted avatar (see `fit`).")],
    size: Annotated[int, typer.Option("--size", help="Texture width and height in texels.")] = 1024,
    faces: Annotated[
        int, typer.Option("--faces", help="Triangles of the textured mesh at most (simplified).")
    ] = 20_000,
    resolution: ResolutionOption = 256,
    power: Annotated[
        float, typer.Option("--power", help="Exponent of the frontal-view weight cos(normal, view).")
    ] = 4.0,
    max_frames: Annotated[
        int, typer.Option("--max-frames", help="Training frames baked at most (evenly spread).")
    ] = 120,
    sources: Annotated[
        int, typer.Option("--sources", help="Frames the pixel-aligned renderer samples at most.")
    ] = 24,
    blender_steps: Annotated[
        int, typer.Option("--blender-steps", help="Training steps of the renderer's blending network.")
    ] = 600,
    device: DeviceOption = "auto",
    force: ForceOption = False,
) -> None:
    """Texture the avatar from the recording's colour frames (UV atlas, OBJ + GLB) and train the
    pixel-aligned renderer's blending network on them."""
    from dataclasses import replace

    from capture.files import read_json
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.pixel_renderer import RenderOptions
    from rgbd2avatar.stages import texture_stage
    from rgbd2avatar.texture import TextureOptions

    if size < 64 or size & (size - 1):
        raise UserError(f"--size {size} is not a power of two of at least 64; use e.g. 1024 or 2048.")
    for value, option in ((faces, "--faces"), (max_frames, "--max-frames"), (sources, "--sources")):
        if value < 1:
            raise UserError(f"{option} {value} must be at least 1.")
    if blender_steps < 0 or power < 0:
        raise UserError("--blender-steps and --power must be zero or more.")
    options = TextureOptions(
        size=size, max_faces=faces, resolution=resolution, power=power, max_frames=max_frames
    )
    render_options = replace(RenderOptions(), sources=sources, steps=blender_steps)
    with Timer() as timer:
        workspace = texture_stage(subject, options, render_options, device, force)
    out = workspace.root / "texture"
    summary, blender = read_json(out / "texture.json"), read_json(out / "blender.json")
    stage_summary(
        "texture", f"{summary['faces']} faces, {size}² texels from {len(summary['frames'])} frames",
        timer.seconds, f"{100 * summary['seen_share']:.0f}% of the surface seen",
        f"blender L1 {blender['final_l1']:.3f}", f"mesh {out / 'avatar.glb'}",
    )  # fmt: skip


@command()
def render(
    subject: Annotated[Path, typer.Argument(help="Subject workspace with a texture (see `texture`).")],
    motion: MotionOption,
    camera: Annotated[
        str,
        typer.Option(
            "--camera",
            "-c",
            help="orbit (one turn around the subject), capture (the recording's colour camera) or a "
            "JSON camera file (intrinsics + world_from_camera in the capture's floor frame).",
        ),
    ] = "orbit",
    method: Annotated[
        str, typer.Option("--method", help="pixel (blend the captured frames) or texture (baked only).")
    ] = "pixel",
    fps: FpsOption = None,
    frames: FramesOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: SUBJECT/texture/renders/<motion>-<camera>)."),
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Render the textured avatar in new poses and views: PNG frames and an MP4, by blending the
    captured colour frames (pixel-aligned) or from the baked texture."""
    from capture.files import read_json
    from rgbd2avatar.logs import Timer, stage_summary
    from rgbd2avatar.motion import parse_frame_range
    from rgbd2avatar.stages import render_stage

    with Timer() as timer:
        folder = render_stage(
            subject, motion, camera, method, fps, parse_frame_range(frames) if frames else None, out, device
        )
    summary = read_json(folder / "render.json")
    stage_summary(
        "render", f"{summary['frames']} frames of {summary['motion']!r} ({method}, {camera})", timer.seconds,
        f"{summary['frames_per_second']:.2f} frames/s", f"video {folder / 'render.mp4'}",
    )  # fmt: skip


def main() -> None:
    """Console-script entry point."""
    app(prog_name="rgbd2avatar")
