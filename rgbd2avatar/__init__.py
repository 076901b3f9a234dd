"""rgbd2avatar: animatable, textured avatars from one person's RGB-D video."""

__version__ = "0.2.3"
