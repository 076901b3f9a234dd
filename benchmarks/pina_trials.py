"""Trials behind docs/pina_experiments.md: PINA on the ``small`` protocol with one
thing changed at a time, scored on the training frames and by its refined poses.

    rgbd2avatar bench                                     # once: the capture and the body fit
    python -m benchmarks.pina_trials TRIAL [TRIAL ...]   # or: all

Each trial copies ``bench_out/small/subject`` (without its avatar) to ``bench_out/trials/TRIAL``
(``--protocol small_clean``: ``bench_out/small_clean/subject`` to
``bench_out/trials/small_clean/TRIAL``), applies its change, fits PINA (``--preset``, default
``fast``) and prints and stores (``benchmarks/results/pina_trials.json``, under ``TRIAL``, with
``:PRESET`` appended for another preset than ``fast`` and ``@PROTOCOL`` for another protocol
than ``small``) the reconstruction metrics on the training frames
(:func:`rgbd2avatar.bench.reconstruction_table`) and on the held-out motions
(:func:`rgbd2avatar.bench.animation_table`, posed as ``animate`` poses), the refined poses' accuracy
(:func:`rgbd2avatar.bench.pose_accuracy`) and the mean change of translation the fit made. The
trainer variants here are experiments, not options of the tool: they subclass
:class:`~fitting.pina.trainer.PinaTrainer` and stand in for it while a trial runs. Trials whose
name says ``true`` or ``shift`` use the ground truth and are diagnostics only. The ``seed_*``
trials (and ``no_pose_opt*``, PINA's ablation) measure how much a result moves with nothing but
the seed (network initialisation and every sample drawn): compare a trial with that spread, not
with the baseline's single value.

One trial takes about 3 minutes on a 2-core CPU with ``fast``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from capture.files import load_npz, read_json, save_npz, write_json
from fitting.pina.data import gather_rows
from fitting.pina.losses import masked_mean
from fitting.pina.trainer import PinaTrainer
from fitting.priors import STIFF_SCALE

BENCH = Path("bench_out")
RESULTS = Path(__file__).resolve().parent / "results" / "pina_trials.json"
CLEAN_OUTLIER = 0.02
"""Metres: observed points farther than this from the true surface are dropped by
:func:`true_surface`."""
CLOTHING = 0.02
"""Metres of the ``clothing_layer`` trial's fixed clothing thickness."""
DENSEPOSE_PX = 4.0
"""Pixels: the noise σ the ``densepose_2d`` trial weights its reprojected correspondences by."""


def temporal_basis(frames: int, terms: int) -> torch.Tensor:
    """(frames, terms) orthonormal DCT-II basis over the frame order: smooth corrections."""
    index = torch.arange(frames, dtype=torch.float32)[:, None] + 0.5
    order = torch.arange(terms, dtype=torch.float32)[None]
    basis = torch.cos(math.pi * index * order / frames) * math.sqrt(2 / frames)
    basis[:, 0] = 1 / math.sqrt(frames)
    return basis


def basis_trainer(terms: int, lr: float) -> type[PinaTrainer]:
    """Pose and translation corrections as ``basis @ coefficients``: every step moves every frame."""

    class BasisTrainer(PinaTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            device = self.data.poses.device
            self.basis = temporal_basis(self.data.num_frames, min(terms, self.data.num_frames)).to(device)
            self.pose_coefficients = torch.zeros(self.basis.shape[1], 72, device=device, requires_grad=True)
            self.trans_coefficients = torch.zeros(self.basis.shape[1], 3, device=device, requires_grad=True)
            self.optimiser = torch.optim.Adam(
                [
                    {"params": list(self.avatar.parameters()), "lr": self.config.lr},
                    {"params": [self.pose_coefficients, self.trans_coefficients], "lr": lr},
                ]
            )

        def poses(self) -> tuple[torch.Tensor, torch.Tensor]:
            return (
                self.data.poses + self.basis @ self.pose_coefficients,
                self.data.trans + self.basis @ self.trans_coefficients,
            )

    return BasisTrainer


def offset_trainer(lr: float) -> type[PinaTrainer]:
    """One translation (3,) shared by all frames, added to the per-frame ones."""

    class OffsetTrainer(PinaTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.offset = torch.zeros(3, device=self.data.poses.device, requires_grad=True)
            self.optimiser.add_param_group({"params": [self.offset], "lr": lr})

        def poses(self) -> tuple[torch.Tensor, torch.Tensor]:
            poses, trans = super().poses()
            return poses, trans + self.offset

    return OffsetTrainer


def warmup_trainer(frozen: float, lr: float) -> type[PinaTrainer]:
    """Poses held for the first ``frozen`` fraction of the joint stage, then refined at ``lr``."""

    class WarmupTrainer(PinaTrainer):
        def _set_learning_rate(self, pretraining: bool) -> None:
            super()._set_learning_rate(pretraining)
            progress = (self.step - self.config.pretrain_steps) / self.config.joint_steps
            self.optimiser.param_groups[1]["lr"] = 0.0 if progress < frozen else lr

    return WarmupTrainer


class RowAdamTrainer(PinaTrainer):
    """Poses stepped by Adam with per-frame moments and step counts (moments of frames not drawn
    are kept, not decayed), so each draw of a frame moves it by about ``pose_lr``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rows = torch.cat([self.pose_delta, self.trans_delta], 1).detach()
        self.row_state = (torch.zeros_like(rows), torch.zeros_like(rows), torch.zeros(len(rows)))

    def _step_drawn_frames(self) -> None:
        gradient = self.pose_delta.grad
        if gradient is None:
            self.optimiser.step()
            return
        grads = torch.cat([gradient, self.trans_delta.grad], 1)
        self.pose_delta.grad = self.trans_delta.grad = None  # the dense Adam leaves them alone
        self.optimiser.step()
        first, second, count = self.row_state
        rows = grads.abs().sum(1) > 0
        count[rows] += 1
        first[rows] = 0.9 * first[rows] + 0.1 * grads[rows]
        second[rows] = 0.999 * second[rows] + 0.001 * grads[rows] ** 2
        corrected = first[rows] / (1 - 0.9 ** count[rows, None])
        scale = (second[rows] / (1 - 0.999 ** count[rows, None])).sqrt() + 1e-8
        step = self.config.pose_lr * corrected / scale
        with torch.no_grad():
            self.pose_delta[rows] -= step[:, : gradient.shape[1]]
            self.trans_delta[rows] -= step[:, gradient.shape[1] :]


def weighted_trainer(weighting: Callable[[torch.Tensor], torch.Tensor]) -> type[PinaTrainer]:
    """The on-surface term as a weighted mean: ``weighting(grazing)`` per observed point, with
    grazing = 1 − |cos| of the angle between its PCA normal and its viewing ray (0 facing the
    camera, 1 at the silhouette)."""

    class WeightedTrainer(PinaTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            points, normals = self.data.points, self.data.normals
            facing = (normals * points).sum(-1).abs() / points.norm(dim=-1).clamp_min(1e-6)
            self.point_weights = weighting(1 - facing.clamp(0, 1))

        def _on_surface_term(self, sdf, found, frames, rows):
            weights = gather_rows(self.point_weights, frames, rows) * found
            return (sdf.abs() * weights).sum() / weights.sum().clamp_min(1e-12)

    return WeightedTrainer


def huber_trainer(beta: float) -> type[PinaTrainer]:
    """The on-surface term as 2 · smooth-L1 with quadratic zone ``beta`` (m): a mean rather than a
    median of each surface patch's observations (slope 1 at |SDF| = beta / 2)."""

    class HuberTrainer(PinaTrainer):
        def _on_surface_term(self, sdf, found, frames, rows):
            cost = 2 * torch.nn.functional.smooth_l1_loss(
                sdf, torch.zeros_like(sdf), reduction="none", beta=beta
            )
            return masked_mean(cost, found)

    return HuberTrainer


@contextlib.contextmanager
def trainer(variant: type[PinaTrainer]) -> Iterator[None]:
    """Fit PINA with ``variant`` in place of :class:`PinaTrainer`."""
    with mock.patch("rgbd2avatar.pina_stage.PinaTrainer", variant):
        yield


@contextlib.contextmanager
def no_pose_condition() -> Iterator[None]:
    """The SDF conditioned on a zero pose: one shape for every frame."""
    zero = lambda pose: torch.zeros_like(pose[..., 3:])  # noqa: E731
    modules = ("rgbd2avatar.avatar.meshes", "rgbd2avatar.avatar.avatar", "fitting.pina.trainer")
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(mock.patch(f"{module}.pose_features", zero))
        yield


@contextlib.contextmanager
def clothing_layer() -> Iterator[None]:
    """``fit-body``'s ICP and DensePose residuals expect the observed point :data:`CLOTHING` outside
    the body along its outward normal."""
    from fitting import body_fit as fit

    def icp_cost(targets, posed, matches, scale):
        vertices = fit.gather_rows(posed.vertices, matches.index)
        distance = ((targets.points - vertices) * matches.normal).sum(-1) - CLOTHING
        return fit.masked_mean(fit.geman_mcclure(distance * distance, scale), matches.ok)

    def densepose_cost(targets, posed, scale):
        surface, corners = fit.densepose_corners(targets, posed)
        normal = torch.cross(
            corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :], dim=-1
        )
        surface = surface + CLOTHING * normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        squared = ((surface - targets.dp_points) ** 2).sum(-1)
        return fit.masked_mean(fit.geman_mcclure(squared, scale), targets.dp_valid)

    with (
        mock.patch.object(fit, "icp_cost", icp_cost),
        mock.patch.object(fit, "densepose_cost", densepose_cost),
    ):
        yield


@contextlib.contextmanager
def densepose_2d() -> Iterator[None]:
    """``fit-body``'s DensePose term in the colour image instead of in 3D: each labelled point's
    body surface point projected through the colour camera against the point's own projection
    (σ = :data:`DENSEPOSE_PX`), which leaves the depth along the ray, and so the clothing's
    thickness, to ICP."""
    from fitting import body_fit as fit

    original = fit.data_terms

    def data_terms(ctx, targets, posed, matches):
        without = replace(ctx, weights=replace(ctx.weights, densepose=0.0))
        terms = original(without, targets, posed, matches)
        surface, _ = fit.densepose_corners(targets, posed)
        (body_pixels, seen), (pixels, observed) = (
            fit.to_color_pixels(ctx, points) for points in (surface, targets.dp_points)
        )
        squared = ((body_pixels - pixels) ** 2).sum(-1)
        robust = fit.geman_mcclure(squared, ctx.options.robust_scale_px)
        terms["densepose"] = fit.masked_mean(robust, targets.dp_valid & seen & observed) / DENSEPOSE_PX**2
        return terms

    with mock.patch.object(fit, "data_terms", data_terms):
        yield


def fixed_layer(metres: float) -> Callable[[], contextlib.AbstractContextManager]:
    """``fit-body``'s depth correction with a given clothing layer, as thick in every region,
    instead of the estimated ones."""

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        from fitting import body_fit as fit
        from fitting.depth_offset import CLOTHED_REGIONS, DepthOffset

        calls = iter([metres])

        def depth_offsets_of(body, obs, fitted):
            offset = next(calls, 0.0)
            return {
                region: DepthOffset(offset, torch.zeros(0), torch.zeros(0), 0) for region in CLOTHED_REGIONS
            }

        with mock.patch.object(fit, "depth_offsets_of", depth_offsets_of):
            yield

    return context


@contextlib.contextmanager
def clothed_proxy() -> Iterator[None]:
    """PINA's proxy geometry (the fitted body of the off-surface term and of the pretraining)
    dressed in ``fit-body``'s clothing layer, moved out along the body's normals: does what no
    frame sees (between the thighs, under the arms, the far side) get the clothes' thickness?"""
    from fitting.body_fit import clothing_layer
    from fitting.pina import data
    from rgbd2avatar import pina_stage
    from rgbd2avatar.geometry import vertex_normals

    layer = {}
    original_load, off_surface, canonical = (
        data.load_pina_data,
        data.off_surface_samples,
        data.canonical_samples,
    )

    def load_pina_data(subject, body, config):
        thickness = read_json(subject / "body_fit" / "fit.json")["clothing_layer_m"]
        with torch.no_grad():
            layer["metres"] = clothing_layer(body, thickness).numpy()[:, None]
        return original_load(subject, body, config)

    def dressed(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        return vertices + vertex_normals(vertices, faces) * layer["metres"]

    with (
        mock.patch.object(pina_stage, "load_pina_data", load_pina_data),
        mock.patch.object(
            data, "off_surface_samples", lambda v, f, *rest: off_surface(dressed(v, f), f, *rest)
        ),
        mock.patch.object(data, "canonical_samples", lambda v, f, *rest: canonical(dressed(v, f), f, *rest)),
    ):
        yield


def off_surface_band(slack: float) -> Callable[[], contextlib.AbstractContextManager]:
    """The off-surface term as a band: the clothed surface lies up to ``slack`` (m) outside the
    fitted body, so a point at body distance d may have SDF anywhere in [d − slack, d]; only
    leaving the band costs (|SDF − d| pulled every point towards the naked body)."""

    def band(sdf: torch.Tensor, body_sdf: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        outside = torch.relu(body_sdf - slack - sdf) + torch.relu(sdf - body_sdf)
        return masked_mean(outside, found)

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        from fitting.pina import losses

        with mock.patch.object(losses, "off_surface", band):
            yield

    return context


def scaled_prior(names: tuple[str, ...], scale: float) -> Callable[[], contextlib.AbstractContextManager]:
    """Context: ``fit-body``'s pose prior ``scale`` times as dear on every axis of the joints
    ``names`` (both sides where a name has no side); ``scale`` = 1 / ``fitting.priors.STIFF_SCALE``
    on the collars and the neck restores the prior they had before it was made dearer."""

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        from fitting import priors
        from rgbd2avatar.body.skeleton import JOINT_INDEX

        original = priors.pose_prior_scales
        joints = [
            index
            for name, index in JOINT_INDEX.items()
            if name.removeprefix("left_").removeprefix("right_") in names
        ]

        def pose_prior_scales(dtype=torch.float32, device=None):
            scales = original(dtype, device).reshape(-1, 3).clone()
            scales[[joint - 1 for joint in joints]] *= scale
            return scales.reshape(-1)

        with mock.patch.object(priors, "pose_prior_scales", pose_prior_scales):
            yield

    return context


@contextlib.contextmanager
def prior_arms_down() -> Iterator[None]:
    """``fit-body``'s pose prior centred on the standing pose it starts from (arms
    :data:`fitting.body_fit.ARM_DROP` below the T-pose) instead of the rest pose: where the depth
    does not show an arm, the prior then lowers it instead of raising it towards the T."""
    from fitting import body_fit as fit
    from fitting import priors

    original = priors.pose_l2

    def pose_l2(body_pose, scales=None):
        return original(body_pose - fit.standing_pose(body_pose.device), scales)

    with mock.patch.object(priors, "pose_l2", pose_l2):
        yield


@contextlib.contextmanager
def true_shape_held() -> Iterator[None]:
    """``fit-body`` with the true shape, held fixed (its learning rate 0) through every pass: does
    the fitted shape, which grows to fill the clothes, cost the poses?"""
    from rgbd2avatar import body_fit_stage

    truth = torch.from_numpy(load_npz(BENCH / "small" / "capture" / "ground_truth" / "body.npz")["shape"])
    original = body_fit_stage.fit_body

    def fit_body(body, obs, weights, options, progress=None):
        body.default_shape.copy_(truth)
        return original(body, obs, weights, replace(options, lr_shape=0.0), progress)

    with mock.patch.object(body_fit_stage, "fit_body", fit_body):
        yield


@contextlib.contextmanager
def shape_refitted() -> Iterator[None]:
    """``fit-body``'s refits with a clothing layer fit the shape again (all three stages, from the
    model's default shape) instead of keeping the first pass's, which grew to fill the clothes."""
    from fitting import body_fit as fit

    original = fit.fit_body

    def fit_body(body, obs, weights, options, progress=None, start=None, clothing=0.0):
        if clothing:  # a refit of refit_with_clothing
            options = replace(options, iterations=fit.FitOptions().iterations)
            start = replace(start, shape=None)
        return original(body, obs, weights, options, progress, start, clothing)

    with mock.patch.object(fit, "fit_body", fit_body):
        yield


def pelvis_positions(body: Any, poses: np.ndarray, shape: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """(F, 3) pelvis joints of the bodies posed by (F, 72) poses, (S,) shape, (F, 3) translations."""
    as_torch = [torch.from_numpy(np.asarray(array, np.float32)) for array in (poses, shape, trans)]
    with torch.no_grad():
        return body(*as_torch).joints[:, 0].numpy()


def true_parts(root: bool) -> Callable[[Path, Path], None]:
    """Edit: the fitted shape kept, and either the root (orientation, and the translation that puts
    the pelvis where the true one is) or the 23 joints' rotations replaced by the truth."""

    def edit(subject: Path, capture: Path) -> None:
        from rgbd2avatar.body import load_body_model

        path = subject / "body_fit" / "fits.npz"
        fits, truth = load_npz(path), load_npz(capture / "ground_truth" / "body.npz")
        frames, poses, trans = fits["frames"], fits["poses"].copy(), fits["trans"].copy()
        true_poses = truth["poses"][frames].astype(poses.dtype)
        if not root:
            poses[:, 3:] = true_poses[:, 3:]
        else:
            poses[:, :3] = true_poses[:, :3]
            body = load_body_model(str(fits["body_model"]))
            fitted = pelvis_positions(body, poses, fits["shape"], trans)
            true = pelvis_positions(body, true_poses, truth["shape"], truth["trans"][frames])
            trans = trans + (true - fitted).astype(trans.dtype)
        save_npz(path, **(fits | {"poses": poses, "trans": trans}))

    return edit


RIGHT_ARM = ("right_collar", "right_shoulder", "right_elbow", "right_wrist", "right_hand")
"""The joints the ``*_right_arm`` trials change."""
ARM_SEEN = (123, 153)
"""Capture frames of the ``small`` protocol between which its right arm is hidden behind the
trunk (frames 126-138) or shows its forearm only (141-150), and the body fit errs there."""


def right_arm(source: str) -> Callable[[Path, Path], None]:
    """Edit: the right arm's rotations in the frames between :data:`ARM_SEEN` replaced by the
    truth's (``source="truth"``, a diagnostic) or by the fitted ones turned at constant angular
    velocity from the first of those frames to the second (``"interpolated"``, no ground truth)."""

    def edit(subject: Path, capture: Path) -> None:
        from rgbd2avatar.body.lbs import axis_angle_to_matrix, matrix_to_axis_angle
        from rgbd2avatar.body.skeleton import JOINT_INDEX

        path = subject / "body_fit" / "fits.npz"
        fits = load_npz(path)
        frames = fits["frames"].tolist()
        poses = fits["poses"].reshape(len(frames), -1, 3).copy()
        joints = [JOINT_INDEX[name] for name in RIGHT_ARM]
        first, last = (frames.index(frame) for frame in ARM_SEEN)
        between = np.arange(first + 1, last)
        if source == "truth":
            true = load_npz(capture / "ground_truth" / "body.npz")["poses"].reshape(-1, poses.shape[1], 3)
            replaced = true[np.asarray(frames)[between]][:, joints]
        else:
            start, end = (axis_angle_to_matrix(torch.from_numpy(poses[row, joints])) for row in (first, last))
            turn = matrix_to_axis_angle(start.transpose(-1, -2) @ end)  # (5, 3)
            share = torch.from_numpy((between - first) / (last - first))[:, None, None].to(turn.dtype)
            replaced = matrix_to_axis_angle(start @ axis_angle_to_matrix(share * turn)).numpy()
        poses[between[:, None], joints] = replaced.astype(poses.dtype)
        save_npz(path, **(fits | {"poses": poses.reshape(len(frames), -1)}))

    return edit


def both(first: Callable[[Path, Path], None], second: Callable[[Path, Path], None]) -> Callable:
    """Edit: ``first``, then ``second``."""

    def edit(subject: Path, capture: Path) -> None:
        first(subject, capture)
        second(subject, capture)

    return edit


def true_bodies(keep_shape: bool) -> Callable[[Path, Path], None]:
    """Edit: the workspace's fits replaced by the true poses and translations (and shape)."""

    def edit(subject: Path, capture: Path) -> None:
        from rgbd2avatar.bench import use_true_bodies

        path = subject / "body_fit" / "fits.npz"
        fitted_shape = load_npz(path)["shape"]
        use_true_bodies(subject, capture)
        if keep_shape:
            save_npz(path, **(load_npz(path) | {"shape": fitted_shape}))

    return edit


def perturbed_poses(radians: float, metres: float) -> Callable[[Path, Path], None]:
    """Edit: Gaussian noise, independent per frame, added to every axis-angle component of the
    fits' poses (σ ``radians``) and to their translations (σ ``metres``); seeded."""

    def edit(subject: Path, capture: Path) -> None:
        path = subject / "body_fit" / "fits.npz"
        fits = load_npz(path)
        rng = np.random.default_rng(0)
        poses = fits["poses"] + rng.normal(0.0, radians, fits["poses"].shape).astype(fits["poses"].dtype)
        trans = fits["trans"] + rng.normal(0.0, metres, fits["trans"].shape).astype(fits["trans"].dtype)
        save_npz(path, **(fits | {"poses": poses, "trans": trans}))

    return edit


def true_surface(snap_points: bool) -> Callable[[Path, Path], None]:
    """Edit: every observed point's normal replaced by the true mesh's at the point's closest
    point; with ``snap_points`` the point moved there too, and points more than
    :data:`CLEAN_OUTLIER` off dropped (uses the truth)."""
    from rgbd2avatar.bench import true_surface_at

    def edit(subject: Path, capture: Path) -> None:
        for path in sorted((subject / "preprocess" / "frames").glob("*.npz")):
            observed = load_npz(path)
            closest, normals = true_surface_at(capture, int(path.stem), observed["points"])
            arrays = observed | {"normals": normals.astype(observed["normals"].dtype)}
            if snap_points:
                arrays["points"] = closest.points.astype(observed["points"].dtype)
                keep = closest.distances <= CLEAN_OUTLIER
                arrays = {key: value[keep] for key, value in arrays.items()}
            save_npz(path, **arrays)

    return edit


def normal_window(window: int, method: str = "pca") -> Callable[[Path, Path], None]:
    """Edit: the capture preprocessed again with ``method`` normals over ``window`` × ``window``
    pixels (:func:`capture.normals.grid_normals`; the same frames; the body fit is kept)."""
    from capture.preprocess import PreprocessOptions, preprocess

    def edit(subject: Path, capture: Path) -> None:
        options = PreprocessOptions(normal_window=window, normal_method=method)
        preprocess(capture / "sequence", subject / "preprocess", options=options)

    return edit


def shift_back(subject: Path, capture: Path) -> None:
    """Edit: the fits moved by minus their mean root offset in the camera frame (uses the truth)."""
    from rgbd2avatar.bench import pose_accuracy

    fits = load_npz(subject / "body_fit" / "fits.npz")
    offset = np.asarray(pose_accuracy(fits, capture)["root_offset_cm"], np.float32) / 100
    save_npz(subject / "body_fit" / "fits.npz", **(fits | {"trans": fits["trans"] - offset}))


@dataclass(frozen=True)
class Trial:
    """One change: config overrides, loss weights, an edit of the copied fits, a context to fit in,
    and whether ``fit-body`` runs again (inside the context) instead of being copied."""

    config: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    edit: Callable[[Path, Path], None] | None = None
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    refit_body: bool = False


SPARSE = {"frames_per_step": 8, "points_per_frame": 96, "off_points_per_frame": 24}
BATCH_4X = {"frames_per_step": 8, "points_per_frame": 1024, "off_points_per_frame": 256}
"""Four times the ``default`` preset's points per joint step (nearly free on a GPU)."""

TRIALS: dict[str, Trial] = {
    "baseline": Trial(),
    "body_refit": Trial(refit_body=True),
    "prior_arms_down": Trial(context=prior_arms_down, refit_body=True),
    "lighter_neck": Trial(context=scaled_prior(("neck",), 1 / STIFF_SCALE), refit_body=True),
    "lighter_collars_neck": Trial(context=scaled_prior(("collar", "neck"), 1 / STIFF_SCALE), refit_body=True),
    "lighter_collars_neck_seed_1": Trial(
        config={"seed": 1}, context=scaled_prior(("collar", "neck"), 1 / STIFF_SCALE), refit_body=True
    ),
    "clothed_proxy": Trial(context=clothed_proxy),
    "clothed_proxy_seed_1": Trial(config={"seed": 1}, context=clothed_proxy),
    "off_margin_8cm": Trial(config={"off_margin": 0.08}),
    "off_margin_8cm_seed_1": Trial(config={"off_margin": 0.08, "seed": 1}),
    "off_weight_0.03": Trial(weights={"off": 0.03}),
    "off_band_5cm": Trial(context=off_surface_band(0.05)),
    "off_band_5cm_seed_1": Trial(config={"seed": 1}, context=off_surface_band(0.05)),
    "true_right_arm": Trial(edit=right_arm("truth")),
    "interpolated_right_arm": Trial(edit=right_arm("interpolated")),
    "interpolated_right_arm_seed_1": Trial(config={"seed": 1}, edit=right_arm("interpolated")),
    "seed_1": Trial(config={"seed": 1}),
    "seed_2": Trial(config={"seed": 2}),
    "no_pose_opt": Trial(config={"optimise_poses": False}),
    "no_pose_opt_seed_1": Trial(config={"optimise_poses": False, "seed": 1}),
    "no_pose_opt_seed_2": Trial(config={"optimise_poses": False, "seed": 2}),
    "true_poses": Trial(edit=true_bodies(keep_shape=False)),
    "true_poses_no_pose_opt": Trial(config={"optimise_poses": False}, edit=true_bodies(keep_shape=False)),
    "true_poses_true_normals": Trial(
        config={"optimise_poses": False},
        edit=both(true_bodies(keep_shape=False), true_surface(snap_points=False)),
    ),
    "true_poses_no_normal_term": Trial(
        config={"optimise_poses": False}, weights={"normal": 0.0}, edit=true_bodies(keep_shape=False)
    ),
    "true_poses_normal_window_3": Trial(
        config={"optimise_poses": False}, edit=both(true_bodies(keep_shape=False), normal_window(3))
    ),
    "true_poses_normal_window_3_all_points": Trial(
        config={"optimise_poses": False, "max_points": 32000},
        edit=both(true_bodies(keep_shape=False), normal_window(3)),
    ),
    "true_poses_normal_window_3_all_points_seed_1": Trial(
        config={"optimise_poses": False, "max_points": 32000, "seed": 1},
        edit=both(true_bodies(keep_shape=False), normal_window(3)),
    ),
    "normal_window_3": Trial(edit=normal_window(3)),
    "rays_normals_9": Trial(edit=normal_window(9, "rays")),
    "rays_normals_9_seed_1": Trial(config={"seed": 1}, edit=normal_window(9, "rays")),
    "perturbed_true_poses": Trial(edit=both(true_bodies(keep_shape=False), perturbed_poses(0.01, 0.003))),
    "perturbed_true_poses_no_pose_opt": Trial(
        config={"optimise_poses": False},
        edit=both(true_bodies(keep_shape=False), perturbed_poses(0.01, 0.003)),
    ),
    "rays_normals_9_no_pose_opt": Trial(config={"optimise_poses": False}, edit=normal_window(9, "rays")),
    "true_poses_rays_normals_9": Trial(
        config={"optimise_poses": False}, edit=both(true_bodies(keep_shape=False), normal_window(9, "rays"))
    ),
    "true_poses_all_points": Trial(
        config={"optimise_poses": False, "max_points": 32000}, edit=true_bodies(keep_shape=False)
    ),
    "all_points": Trial(config={"max_points": 32000}),
    "true_poses_clean_observations": Trial(
        config={"optimise_poses": False},
        edit=both(true_bodies(keep_shape=False), true_surface(snap_points=True)),
    ),
    "true_poses_fitted_shape": Trial(edit=true_bodies(keep_shape=True)),
    "depth_shift": Trial(edit=shift_back),
    "pose_lr_2e-3": Trial(config=SPARSE | {"pose_lr": 2e-3}),
    "pose_lr_5e-3": Trial(config=SPARSE | {"pose_lr": 5e-3}),
    "temporal_basis": Trial(context=lambda: trainer(basis_trainer(16, 1e-3))),
    "temporal_basis_no_off": Trial(weights={"off": 0.0}, context=lambda: trainer(basis_trainer(16, 1e-3))),
    "shared_offset": Trial(context=lambda: trainer(offset_trainer(1e-3))),
    "no_pose_condition": Trial(context=no_pose_condition),
    "pose_warmup": Trial(context=lambda: trainer(warmup_trainer(0.5, 2e-3))),
    "pose_lr_2e-3_preset_batch": Trial(config={"pose_lr": 2e-3}),
    "pose_weight_10": Trial(weights={"pose": 10.0}),
    "clothing_layer": Trial(context=clothing_layer, refit_body=True),
    "row_adam": Trial(context=lambda: trainer(RowAdamTrainer)),
    "row_adam_2e-4": Trial(config={"pose_lr": 2e-4}, context=lambda: trainer(RowAdamTrainer)),
    "joint_3000": Trial(config={"joint_steps": 3000}),
    "joint_3000_seed_1": Trial(config={"joint_steps": 3000, "seed": 1}),
    "joint_3000_no_pose_opt": Trial(config={"joint_steps": 3000, "optimise_poses": False}),
    "batch_4x": Trial(config=BATCH_4X),
    "batch_4x_seed_1": Trial(config=BATCH_4X | {"seed": 1}),
    "grazing_5": Trial(context=lambda: trainer(weighted_trainer(lambda grazing: 1 + 5 * grazing))),
    "grazing_10": Trial(context=lambda: trainer(weighted_trainer(lambda grazing: 1 + 10 * grazing))),
    "sdf_huber_2cm": Trial(context=lambda: trainer(huber_trainer(0.02))),
    "densepose_2d": Trial(context=densepose_2d, refit_body=True),
    "layer_30mm": Trial(context=fixed_layer(0.03), refit_body=True),
    "layer_30mm_seed_1": Trial(config={"seed": 1}, context=fixed_layer(0.03), refit_body=True),
    "true_root": Trial(edit=true_parts(root=True)),
    "true_articulation": Trial(edit=true_parts(root=False)),
    "true_shape_body_fit": Trial(context=true_shape_held, refit_body=True),
    "shape_refitted": Trial(context=shape_refitted, refit_body=True),
}


def run_trial(name: str, preset_name: str, out: Path, protocol_name: str = "small") -> dict[str, Any]:
    """Fit and score one trial on a protocol's body fit (``bench_out/<protocol>``); returns its row."""
    from fitting.pina.config import preset
    from rgbd2avatar.bench import (
        PROTOCOLS,
        animation_table,
        body_fit_accuracy,
        prepare_subject,
        reconstruction_table,
        refined_pose_accuracy,
    )
    from rgbd2avatar.stages import pina_stage

    trial, source = TRIALS[name], BENCH / protocol_name / "subject"
    capture = BENCH / protocol_name / "capture"
    if not (source / "body_fit" / "fits.npz").exists():
        raise SystemExit(f"{source} has no body fit; run `rgbd2avatar bench` first.")
    subject = out / name
    shutil.rmtree(subject, ignore_errors=True)
    config = preset(preset_name, **trial.config)
    config = replace(config, weights=replace(config.weights, **trial.weights))
    with trial.context():
        if trial.refit_body:
            prepare_subject(capture, subject)
        else:
            shutil.copytree(source, subject, ignore=shutil.ignore_patterns("recording", "pina"))
        if trial.edit is not None:
            trial.edit(subject, capture)
        pina_stage(subject, config, "cpu", force=True)
    protocol = replace(PROTOCOLS[protocol_name], pina_preset=preset_name)
    row = reconstruction_table(protocol, capture, subject, {"pina": subject})["pina"]
    held_out = animation_table(protocol, None, {"pina": subject}, own_condition=())["pina"]
    refined = load_npz(subject / "pina" / "poses.npz")
    return {
        "preset": preset_name,
        "reconstruction": {key: value for key, value in row.items() if key != "evaluated_frames"},
        "held_out": held_out,
        "body_fit": body_fit_accuracy(subject, capture),
        "refined_poses": refined_pose_accuracy(subject, capture),
        "trans_change_mm": ((refined["trans"] - refined["initial_trans"]).mean(0) * 1000).tolist(),
        "train_seconds": read_json(subject / "pina" / "train.json")["optimisation_seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pina_trials", description=__doc__.splitlines()[0]
    )
    parser.add_argument("trials", nargs="+", help="trial names, or all: " + " ".join(TRIALS))
    parser.add_argument("--preset", default="fast", help="PINA preset (default: fast)")
    parser.add_argument("--out", type=Path, default=BENCH / "trials", help="folder for the trial workspaces")
    parser.add_argument(
        "--protocol", default="small", help="whose capture and body fit (`rgbd2avatar bench --protocol`)"
    )
    args = parser.parse_args(argv)
    names = list(TRIALS) if args.trials == ["all"] else args.trials
    unknown = [name for name in names if name not in TRIALS]
    if unknown:
        parser.error(f"unknown trials: {' '.join(unknown)}")
    results = read_json(RESULTS) if RESULTS.exists() else {}
    for name in names:
        entry = name + ("" if args.preset == "fast" else f":{args.preset}")
        entry += "" if args.protocol == "small" else f"@{args.protocol}"
        out = args.out if args.protocol == "small" else args.out / args.protocol
        results[entry] = run_trial(name, args.preset, out, args.protocol)
        fitted = results[entry]["body_fit"]
        body = (
            f"body_fit mpjpe_cm={fitted['mpjpe_cm']:.3f} root_offset_z_cm={fitted['root_offset_cm'][2]:.2f}"
        )
        scores = [
            f"{part} " + " ".join(f"{key}={value:.4g}" for key, value in results[entry][part].items())
            for part in ("reconstruction", "held_out")
        ]
        print(name, *scores, body, flush=True)
        write_json(RESULTS, results)


if __name__ == "__main__":
    main()
