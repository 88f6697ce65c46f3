"""Reading checkpoints released by other codebases without running their pickled code.

A released file is a pickle: besides tensors, MMAction2 1.x files hold mmengine objects (``message_hub`` with
``HistoryBuffer``s, numpy scalars in ``meta``, sometimes optimizer state) and the official TSM/TCM files an
``arch`` string and epoch counters. ``torch.load(weights_only=True)`` refuses the foreign classes, and
``weights_only=False`` would import and call whatever the file names. So: ``weights_only=True`` first; when it
refuses a class, ``InertUnpickler`` reads the file again, resolving only the tensor-rebuilding functions of
torch and a few plain containers, and turning every other class or function into an inert ``Placeholder`` (it
records its name, runs nothing). Only the tensors are kept.
"""

from __future__ import annotations

import collections
import pickle
import types
from collections.abc import Mapping
from pathlib import Path

import torch

from tempo.errors import UserError

#: What the inert unpickler resolves to the real object: tensor rebuilding and plain containers.
ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}


class Placeholder:
    """Base of the stand-ins for the classes and functions a file names but we do not trust: building one,
    calling one or setting its state runs nothing (pickle's NEWOBJ needs a type, hence one subclass per name)."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs) -> Placeholder:  # REDUCE on a stand-in's result (getattr(x, "f")(…))
        return self

    def __setstate__(self, state) -> None:  # pickle's BUILD
        pass

    def __setitem__(self, key, value) -> None:  # pickle's SETITEM(S) on a dict subclass
        pass

    def append(self, value) -> None:  # APPEND(S) on a list subclass
        pass

    def extend(self, values) -> None:
        pass

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def placeholder(qualname: str) -> type[Placeholder]:
    return type(qualname.rsplit(".", 1)[-1], (Placeholder,), {"qualname": qualname})


class InertUnpickler(pickle.Unpickler):
    """Resolves `ALLOWED` and torch's storage/dtype names; anything else becomes a `Placeholder`.
    (torch's loader subclasses this and resolves the storage types itself before calling `find_class`.)"""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return placeholder(f"{module}.{name}")


#: What `torch.load(pickle_module=...)` needs: `Unpickler` and `load` (the legacy format reads its header).
INERT_PICKLE = types.SimpleNamespace(Unpickler=InertUnpickler, load=lambda f, **kw: InertUnpickler(f, **kw).load(),
                                     __name__="inert_pickle")


class CheckpointError(UserError, ValueError):
    """A file that is not a readable checkpoint of the expected kind; the message names the file and the fix."""


def load_any(path: str | Path, what: str = "checkpoint") -> object:
    """The unpickled content of `path`, foreign classes as `Placeholder`s. Missing, truncated and
    non-checkpoint files raise `CheckpointError` naming the file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{what}={path}: no such file")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # a class weights_only refuses (mmengine, numpy …): read again with the inert unpickler
    except Exception as err:  # noqa: BLE001 - truncated zip, garbage bytes …: "not a checkpoint"
        raise _unreadable(file, what, err) from None
    try:
        return torch.load(file, map_location="cpu", weights_only=False, pickle_module=INERT_PICKLE)
    except Exception as err:  # noqa: BLE001 - any failure of a foreign pickle is "not a checkpoint"
        raise _unreadable(file, what, err) from None


def _unreadable(file: Path, what: str, err: Exception) -> CheckpointError:
    return CheckpointError(f"{what}={file} is not a readable PyTorch checkpoint (truncated or another kind of "
                           f"file: {type(err).__name__}: {str(err)[:200]}); download it again or pick the .pth file")


def tensors_of(content: object, path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: its ``state_dict`` (or ``model``/``module``) entry, else the dict itself;
    non-tensor entries (placeholders, counters) are dropped."""
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{what}={path} holds a {type(content).__name__}, not a checkpoint dictionary")
    for key in ("state_dict", "model", "module"):
        if isinstance(content.get(key), Mapping):
            content = content[key]
            break
    state = {str(k): v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{what}={path} holds no tensors (keys {list(content)[:8]}); pass a model "
                              "checkpoint (.pth with a state_dict)")
    return state


def read_tensors(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """`tensors_of(load_any(path))`: the state dict of any released checkpoint, read safely."""
    return tensors_of(load_any(path, what), path, what)
