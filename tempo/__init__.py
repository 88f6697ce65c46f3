"""tempo: config-driven training for video action recognition."""

__version__ = "0.1.0"

from pathlib import Path

# The Hydra config tree (conf/ beside the package): an absolute path, so the console scripts
# (tempo-train, …) find it from any working directory, not only `python -m` from the repo root.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
