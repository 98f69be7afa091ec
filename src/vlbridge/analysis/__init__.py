"""The MemVP paper's analyses of what the memory holds: visual knowledge locating and distortion."""

from vlbridge.analysis.distort import DistortionResult, distort
from vlbridge.analysis.locate import grid_shape, lm_positions, locate
from vlbridge.analysis.overlay import save_overlay

__all__ = ["DistortionResult", "distort", "grid_shape", "lm_positions", "locate", "save_overlay"]
