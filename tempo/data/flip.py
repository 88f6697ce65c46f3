"""Left/right class pairs for horizontal-flip augmentation, derived from class NAMES.

Flipping a video mirrors directions: "Pushing something from left to right" becomes
"Pushing something from right to left". A pair is two names that become each other when
the WORDS `left` and `right` are swapped (whole words only, so "upright" or
"pulling it right out" never match a name that does not exist). Numbers are never
hard-coded: the pairs follow whatever label order the dataset uses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_SWAP = {"left": "right", "right": "left"}


def swap_left_right(name: str) -> str:
    """Swap the words left↔right, keeping their capitalisation."""

    def repl(m: re.Match[str]) -> str:
        word = m.group(0)
        other = _SWAP[word.lower()]
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(repl, name)


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def left_right_pairs(class_names: Sequence[str]) -> list[tuple[int, int]]:
    """(i, j) with i < j for every two classes whose names are left/right mirrors of each other."""
    index = {_key(name): i for i, name in enumerate(class_names)}
    pairs = []
    for i, name in enumerate(class_names):
        if not _LEFT_RIGHT.search(name):
            continue
        j = index.get(_key(swap_left_right(name)))
        if j is not None and j > i:
            pairs.append((i, j))
    return pairs


def flip_label_map(class_names: Sequence[str]) -> list[int]:
    """`label_map[i]` = label of a flipped video of class i (identity except the swapped pairs)."""
    label_map = list(range(len(class_names)))
    for i, j in left_right_pairs(class_names):
        label_map[i], label_map[j] = j, i
    return label_map
