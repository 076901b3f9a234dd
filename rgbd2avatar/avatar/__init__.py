"""The neural avatar (PINA Sec. 3.1): canonical SDF and skinning networks, and the deformer that
connects canonical and posed space (learned LBS forward, Broyden correspondence search back).

Modules: :mod:`~rgbd2avatar.avatar.networks`, :mod:`~rgbd2avatar.avatar.broyden` (the solver),
:mod:`~rgbd2avatar.avatar.deformer`.
"""

from rgbd2avatar.avatar.deformer import ForwardDeformer, take
from rgbd2avatar.avatar.networks import (
    PositionalEncoding,
    SDFNetwork,
    SkinningNetwork,
    pose_features,
    pretrain_skinning,
)

__all__ = [
    "ForwardDeformer",
    "PositionalEncoding",
    "SDFNetwork",
    "SkinningNetwork",
    "pose_features",
    "pretrain_skinning",
    "take",
]
