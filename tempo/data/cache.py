"""Where tempo caches generated data (the synthetic set) and frame-count manifests.

``default_cache_dir()`` is the one Python default; ``paths.cache_dir`` in conf/paths/default.yaml spells the same
rule with ``oc.env`` (tests/test_sources.py checks that both agree):
``$TEMPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/tempo``, else ``~/.cache/tempo``.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    if os.environ.get("TEMPO_CACHE_DIR"):
        return Path(os.environ["TEMPO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tempo"
