"""Seeded weights for the zoo fixtures: the same tensors from a key list and a seed, in the fixture script
(`tests/fixtures/make_zoo_fixtures.py`, with the source framework) and in the tests (without it)."""

from __future__ import annotations

import math

import torch


def seeded_state(keys: list[tuple[str, list[int]]], seed: int) -> dict[str, torch.Tensor]:
    """One tensor per (name, shape), drawn in order from one generator: conv/linear weights N(0, 1/fan_in),
    BN γ in [0.5, 1.5], β and biases N(0, 0.1²), running means N(0, 0.1²), running variances in [0.5, 1.5],
    BN counters 0 — values that keep the activations of a deep random network finite and distinct."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in keys:
        size = tuple(shape)
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(size, dtype=torch.long)
        elif name.endswith("running_var") or (name.endswith("weight") and len(size) == 1):
            state[name] = torch.rand(size, generator=gen) + 0.5
        elif name.endswith(("running_mean", "bias")):
            state[name] = torch.randn(size, generator=gen) * 0.1
        else:
            fan_in = math.prod(size[1:]) or 1
            state[name] = torch.randn(size, generator=gen) / math.sqrt(fan_in)
    return state


def seeded_input(shape: list[int], seed: int) -> torch.Tensor:
    """The fixed (B, C, T, H, W) input the logits were computed on (normalised pixels, N(0, 1))."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
