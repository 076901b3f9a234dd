"""PINA's global optimisation (Sec. 3.2): two stages, seeded sampling, checkpoints and resume.

Stage 1 (``pretrain_steps``): the SDF and skinning networks learn the canonical body mesh: its
signed distance (conditioned on random training poses), its skinning weights, the Eikonal term.

Stage 2 (``joint_steps``): the SDF network, the skinning network and every frame's pose and
translation are optimised together against the depth frames (Eq. 9): observed points and
normals through the correspondence search, off-surface points against the fitted body's SDF,
Eikonal in canonical space, plus two small regularisers (:class:`LossWeights`).

Every random choice comes from one ``torch.Generator`` whose state is checkpointed with the
networks, poses and Adam moments, so a run resumed from a checkpoint continues exactly the same
optimisation (on the same device).

Shapes: F frames, B frames per step, N points per frame, J bones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from capture.files import atomic_path
from fitting.pina import losses
from fitting.pina.config import PinaConfig
from fitting.pina.data import PinaData, gather_rows, sample_frames, sample_rows
from rgbd2avatar.avatar.avatar import Avatar, AvatarSpec
from rgbd2avatar.avatar.networks import pose_features
from rgbd2avatar.body.model import BodyModel

CHECKPOINT_FORMAT = "rgbd2avatar-pina-checkpoint"
CHECKPOINT_VERSION = 1
NEAR_SURFACE = 0.01
"""Canonical samples closer than this (m) to the body anchor the skinning field."""
HISTORY_EVERY = 10
"""Steps between entries of the loss history."""

Report = Callable[[int, int, dict[str, float]], None]
"""``report(step, total_steps, losses)`` after each step."""


def avatar_spec(config: PinaConfig) -> AvatarSpec:
    """The network sizes of a configuration."""
    return AvatarSpec(
        sdf_hidden=config.sdf_hidden, sdf_layers=config.sdf_layers, sdf_freqs=config.sdf_freqs,
        skin_hidden=config.skin_hidden, skin_layers=config.skin_layers,
    )  # fmt: skip


class PinaTrainer:
    """Optimises an :class:`Avatar` and per-frame poses against a subject's :class:`PinaData`.

    Args:
        body: the body model of the fits (on the data's device).
        data: observations and pseudo ground truth (on the device to train on).
        config: the optimisation; ``config.seed`` seeds the networks and the sampling.
        signature: identifies the inputs; a checkpoint with another signature is not resumed.
    """

    def __init__(self, body: BodyModel, data: PinaData, config: PinaConfig, signature: str = "") -> None:
        self.data, self.config, self.signature = data, config, signature
        device = data.points.device
        torch.manual_seed(config.seed)
        self.avatar = Avatar(body, data.shape, avatar_spec(config)).to(device)
        self.pose_delta = torch.zeros_like(data.poses, requires_grad=config.optimise_poses)
        self.trans_delta = torch.zeros_like(data.trans, requires_grad=config.optimise_poses)
        groups = [{"params": list(self.avatar.parameters()), "lr": config.lr}]
        if config.optimise_poses:
            groups.append({"params": [self.pose_delta, self.trans_delta], "lr": config.pose_lr})
        self.optimiser = torch.optim.Adam(groups)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.near_rows = (data.canonical_sdf.abs() < NEAR_SURFACE).nonzero()[:, 0].cpu()
        self.counts = data.counts.cpu()
        self.found_fraction = 0.0

    def poses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current (refined) poses (F, 72) and translations (F, 3)."""
        return self.data.poses + self.pose_delta, self.data.trans + self.trans_delta

    def run(
        self, checkpoint: Path | None = None, report: Report | None = None, until: int | None = None
    ) -> None:
        """Optimise up to step ``until`` (default: the end), checkpointing every
        ``checkpoint_every`` steps, at the end, and when interrupted (Ctrl-C re-raises after saving)."""
        until = self.config.total_steps if until is None else min(until, self.config.total_steps)
        try:
            while self.step < until:
                step_losses = self.train_step()
                if report is not None:
                    report(self.step, self.config.total_steps, step_losses)
                if checkpoint is not None and self.step % self.config.checkpoint_every == 0:
                    self.save(checkpoint)
        except KeyboardInterrupt:
            if checkpoint is not None:
                self.save(checkpoint)
            raise
        if checkpoint is not None:
            self.save(checkpoint)

    def train_step(self) -> dict[str, float]:
        """One optimisation step of the current stage; returns its weighted total and terms."""
        pretraining = self.step < self.config.pretrain_steps
        self._set_learning_rate(pretraining)
        terms = self._pretrain_terms() if pretraining else self._joint_terms()
        weights = self.config.weights
        scale = {"canonical_sdf": 1.0, "skinning": 1.0 if pretraining else weights.skinning}
        total = sum(value * scale.get(name, getattr(weights, name, 1.0)) for name, value in terms.items())
        self.optimiser.zero_grad(set_to_none=True)
        total.backward()
        self._step_drawn_frames()
        self.step += 1
        values = {"total": float(total.detach())} | {
            name: float(value.detach()) for name, value in terms.items()
        }
        if not pretraining:
            values["found"] = self.found_fraction
        if self.step % HISTORY_EVERY == 0 or self.step == self.config.total_steps:
            self.history.append({"step": float(self.step), **values})
        return values

    def _step_drawn_frames(self) -> None:
        """An Adam step in which only the frames drawn this step (non-zero pose gradient) move.

        Adam moves a parameter with a zero gradient on its momentum, so a dense step would keep
        every frame not drawn drifting along its last update: on the ``small`` protocol (``fast``)
        the refined poses then ended up worse than the body fit they started from (MPJPE 1.28 →
        1.51 cm, training Chamfer 0.81 cm); moving the drawn frames only gives 1.30 cm and 0.74 cm
        (``python -m benchmarks.pina_trials baseline`` before and after this change, commit
        b3fc3d4). The held frames' moment estimates still decay, as if they had seen zero
        gradients. Keeping them instead (per-frame moments and step counts, each draw then moves
        a frame by about ``pose_lr``) was worse: 0.78 cm at ``pose_lr`` 5e-4 and 0.79 cm at 2e-4
        (``python -m benchmarks.pina_trials row_adam row_adam_2e-4``).
        """
        gradient = self.pose_delta.grad
        if gradient is None:
            self.optimiser.step()
            return
        held = (gradient.abs().sum(1) == 0) & (self.trans_delta.grad.abs().sum(1) == 0)
        before = self.pose_delta.detach()[held], self.trans_delta.detach()[held]
        self.optimiser.step()
        with torch.no_grad():
            self.pose_delta[held], self.trans_delta[held] = before

    def _set_learning_rate(self, pretraining: bool) -> None:
        """Cosine decay from ``lr`` to ``lr · lr_decay`` over each stage (networks only; decaying
        the poses' rate too changed nothing beyond the seeds' spread: docs/pina_experiments.md)."""
        config = self.config
        start, length = (
            (0, config.pretrain_steps) if pretraining else (config.pretrain_steps, config.joint_steps)
        )
        progress = (self.step - start) / max(length, 1)
        factor = config.lr_decay + (1 - config.lr_decay) * 0.5 * (1 + math.cos(math.pi * progress))
        self.optimiser.param_groups[0]["lr"] = config.lr * factor

    def _draw(self, pool: int | torch.Tensor, count: int) -> torch.Tensor:
        """(count,) random rows of a pool (its size, or a tensor of allowed rows), on the device."""
        if isinstance(pool, torch.Tensor):
            return pool[sample_rows(self.generator, torch.tensor([len(pool)]), count)[0]].to(
                self.data.points.device
            )
        return sample_rows(self.generator, torch.tensor([pool]), count)[0].to(self.data.points.device)

    def _conditions(self, count: int) -> torch.Tensor:
        """(count, 72) poses of random training frames (refined), as SDF conditions."""
        rows = sample_frames(self.generator, self.data.num_frames, count).to(self.data.points.device)
        return self.poses()[0][rows].detach()

    def _canonical_batch(self, rows: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical samples split over ``frames`` random pose conditions: (B, n, 3), (B, 72)."""
        frames = max(1, min(frames, self.data.num_frames))
        rows = rows[: len(rows) // frames * frames]
        return self.data.canonical_points[rows].view(frames, -1, 3), self._conditions(frames)

    def _eikonal_and_fit(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDF values (B, n), gradients (B, n, 3) and pool rows (B, n) of canonical samples."""
        rows = self._draw(self.data.canonical_points.shape[0], count)
        points, condition = self._canonical_batch(rows, self.config.frames_per_step)
        sdf, gradient = self.avatar.sdf.gradient(points, pose_features(condition), create_graph=True)
        return sdf, gradient, rows[: sdf.numel()].view_as(sdf)

    def _pretrain_terms(self) -> dict[str, torch.Tensor]:
        sdf, gradient, rows = self._eikonal_and_fit(self.config.pretrain_points)
        skin_rows = self._draw(self.data.canonical_points.shape[0], self.config.pretrain_points)
        return {
            "canonical_sdf": losses.canonical_sdf_fit(sdf, self.data.canonical_sdf[rows]),
            "eikonal": losses.eikonal(gradient),
            "skinning": self._skinning_term(skin_rows),
        }

    def _skinning_term(self, rows: torch.Tensor) -> torch.Tensor:
        log_weights = torch.log_softmax(self.avatar.skinning.logits(self.data.canonical_points[rows]), -1)
        return losses.skinning_anchor(log_weights, self.data.canonical_weights[rows])

    def _joint_terms(self) -> dict[str, torch.Tensor]:
        config, data = self.config, self.data
        device = data.points.device
        frames = sample_frames(self.generator, data.num_frames, config.frames_per_step)
        on_index = sample_rows(self.generator, self.counts[frames], config.points_per_frame).to(device)
        off_index = sample_rows(
            self.generator, torch.full((len(frames),), data.off_points.shape[1]), config.off_points_per_frame
        ).to(device)
        frames = frames.to(device)
        poses, trans = self.poses()
        pose, translation = poses[frames], trans[frames]
        observed = gather_rows(data.points, frames, on_index)
        # One correspondence search for the on- and off-surface points (one solver loop and one
        # skinning pass instead of two: fewer, larger kernels); normals are used for the first.
        away = gather_rows(data.off_points, frames, off_index)
        query = self.avatar.posed_sdf(torch.cat([observed, away], 1), pose, translation, normals=True)
        sizes = [observed.shape[1], away.shape[1]]
        (on_sdf, off_sdf), (on_found, off_found) = query.sdf.split(sizes, 1), query.found.split(sizes, 1)
        _, gradient, _ = self._eikonal_and_fit(config.eikonal_points)
        observed_normals = gather_rows(data.normals, frames, on_index)
        on_normals = query.normals[:, : sizes[0]]
        self.found_fraction = float(on_found.float().mean())
        terms = {
            "sdf": self._on_surface_term(on_sdf, on_found, frames, on_index),
            "normal": losses.normal_agreement(on_normals, observed_normals, on_found),
            "off": losses.off_surface(off_sdf, gather_rows(data.off_sdf, frames, off_index), off_found),
            "eikonal": losses.eikonal(gradient),
            "skinning": self._skinning_term(self._draw(self.near_rows, config.eikonal_points)),
        }
        if config.optimise_poses:
            terms["pose"] = losses.pose_change(pose, data.poses[frames])
        return terms

    def _on_surface_term(
        self, sdf: torch.Tensor, found: torch.Tensor, frames: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """L_sdf of the drawn observed points: sdf, found (B, N); frames (B,) and rows (B, N) say
        which points they are (``data.points[frames[b], rows[b, n]]``), for variants that weight them."""
        return losses.on_surface_sdf(sdf, found)

    def state_dict(self) -> dict:
        """Everything needed to continue: networks, poses, Adam, sampler, step, history, config."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "signature": self.signature,
            "config": self.config.to_dict(),
            "step": self.step,
            "avatar": self.avatar.state_dict(),
            "pose_delta": self.pose_delta.detach().clone(),
            "trans_delta": self.trans_delta.detach().clone(),
            "optimiser": self.optimiser.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.avatar.load_state_dict(state["avatar"])
        with torch.no_grad():
            self.pose_delta.copy_(state["pose_delta"])
            self.trans_delta.copy_(state["trans_delta"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.generator.set_state(state["generator"])
        self.history = list(state["history"])

    def save(self, path: Path) -> None:
        """Write a checkpoint atomically (an interrupted write leaves the previous one)."""
        with atomic_path(path) as temp:
            torch.save(self.state_dict(), temp)

    def resume(self, path: Path) -> bool:
        """Continue from ``path`` if it is a checkpoint of this configuration and these inputs.

        Returns:
            True when resumed; False when there is no such checkpoint (then nothing changes).
        """
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.data.points.device, weights_only=True)
        same = (
            state.get("format") == CHECKPOINT_FORMAT
            and state.get("version") == CHECKPOINT_VERSION
            and state.get("signature") == self.signature
            and state.get("config") == self.config.to_dict()
        )
        if same:
            self.load_state_dict(state)
        return same
