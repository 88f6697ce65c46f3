"""tempo: config-driven training for video action recognition."""

__version__ = "0.1.0"
