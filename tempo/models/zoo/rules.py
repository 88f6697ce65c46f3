"""Key renaming by ordered regular-expression rules, shared by the per-layout modules."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

Rule = tuple[str, str]


def rename(key: str, rules: Sequence[Rule]) -> str | None:
    """`key` after every matching rule (in order); None when no rule matched (the key maps nowhere).
    A rule whose replacement is "" drops the key (a buffer the other codebase keeps and tempo has not)."""
    matched = False
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key)
        if count:
            matched = True
            key = new
    return key if matched else None


def rename_all(state: Mapping[str, torch.Tensor], rules: Sequence[Rule]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tempo-named tensors, source keys no rule maps)."""
    out, unmapped = {}, []
    for key, value in state.items():
        new = rename(key, rules)
        if new is None:
            unmapped.append(key)
        elif new:
            out[new] = value
    return out, unmapped
