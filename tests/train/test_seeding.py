"""train.seed seeds every generator a checkpoint saves, so two processes running one recipe save the same state."""

from __future__ import annotations

import random

import numpy as np
import torch

from vlbridge.runs import seed_everything
from vlbridge.train.state import capture_rng


def test_seed_everything_gives_every_saved_generator_the_same_state_whatever_came_before():
    states = []
    for before in (1, 2):
        random.seed(before)
        np.random.seed(before)
        torch.manual_seed(before)
        seed_everything(0)
        tensors, plain = capture_rng()
        states.append((tensors["torch"], plain))
    assert torch.equal(states[0][0], states[1][0])
    assert states[0][1] == states[1][1]  # Python's and NumPy's
