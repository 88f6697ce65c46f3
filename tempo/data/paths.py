"""What is wrong with a dataset's root or annotation folder, and how to fix it (one copy of the check)."""

from __future__ import annotations

from pathlib import Path

# the dataset folders the real-dataset configs leave null for the user: what they hold, an example
DATASET_PATHS = {"root": ("videos", "/data/{name}"), "annotations": ("annotation files", "/data/{name}/annotations")}


def dataset_path_problem(dataset: str | None, key: str, value) -> str | None:
    """What is wrong with `dataset.<key>` (root or annotations), with the fixes; None if fine.
    The one copy of this check: train (start-up), the data module and `tempo.prepare` use it."""
    what, example = DATASET_PATHS[key]
    name = dataset or "<name>"
    if value is None:
        return (f"dataset.{key} is not set; pass the folder holding the {dataset or 'dataset'} {what} "
                f"(e.g. `dataset.{key}={example.format(name=name)}`)")
    path = Path(str(value)).expanduser()
    if not path.exists():
        return (f"dataset.{key}: the {name} {what} folder {path.resolve()} does not exist. Either put the data "
                f"there (layouts: README, Datasets), or set TEMPO_DATA_DIR (or paths.data_dir=) to the folder "
                f"that holds your datasets, or pass both folders: "
                f"`dataset.root=/path/to/videos dataset.annotations=/path/to/annotations`")
    return None
