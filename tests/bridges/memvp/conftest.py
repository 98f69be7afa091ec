"""Fixtures of the MemVP tests: fresh tiny LMs (each test may attach hooks to its own)."""

from __future__ import annotations

import pytest
import torch
from tiny_memvp import tiny_gpt2, tiny_llama


@pytest.fixture
def llama():
    torch.manual_seed(0)
    return tiny_llama()


@pytest.fixture
def gpt2():
    torch.manual_seed(0)
    return tiny_gpt2()
