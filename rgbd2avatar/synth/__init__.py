"""Synthetic subjects and captures with exact ground truth."""
