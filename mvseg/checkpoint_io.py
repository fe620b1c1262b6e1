"""Checkpoint files that are either whole or absent, loaded without running code.

Lightning's default (fsspec transaction) writes a checkpoint to the system temp folder and
moves it over the target: when the temp folder is on another filesystem (a node-local /tmp,
checkpoints on NFS or Lustre), the move is a copy into the target file, so a kill or a full
disk during that copy truncates the previous good checkpoint. Here the bytes go to a
temporary file beside the target, are fsynced, and replace it with one rename (atomic on POSIX
filesystems); a failed write removes the temporary file and leaves the previous checkpoint as it
was. Loading uses torch.load(weights_only=True) whatever the caller asks: a checkpoint is data.
Remote paths (s3://, gs://, ...) keep Lightning's own implementation.
"""

from __future__ import annotations

import io
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the file at its path (if any) is unchanged."""


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to `path` through a temporary file in the same folder and one rename."""
    path = Path(str(path).removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # serialised first, as Lightning does: a failed write() is then an OSError,
    torch.save(obj, buf)  # not a RuntimeError from inside torch's zip writer
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing was written"
        err = CheckpointWriteError(f"{path}: could not write the checkpoint ({e.strerror or e}); {kept}")
        err.errno = e.errno
        raise err from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the folder is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic


class UnsafeCheckpointError(ValueError):
    """A checkpoint that is not plain data (it would run code when unpickled), or not a
    checkpoint at all."""


def safe_load(path: str | Path, map_location: Any = "cpu") -> dict:
    """torch.load(weights_only=True), with errors that name the file: pickled code is refused
    (never run); an empty, truncated or foreign file (a video, a text file), or a torch file that
    holds something other than a dict (a checkpoint is one), is said to be one."""
    local = str(path).removeprefix("file://")
    with open(local, "rb") as f:  # a missing file: FileNotFoundError, naming it
        head = f.read(4)
    if not head:
        raise UnsafeCheckpointError(f"{path}: empty file (0 bytes), not a checkpoint (an interrupted copy or write?)")
    # torch.save writes a zip archive (PK..); the legacy format starts with pickle's protocol opcode
    if not (head == b"PK\x03\x04" or head[0] == 0x80):
        raise UnsafeCheckpointError(
            f"{path}: not a PyTorch checkpoint (it starts with {head!r}; torch.save "
            "writes a zip archive): another kind of file?"
        )
    try:
        obj = torch.load(local, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refused: it holds Python objects other than tensors and plain data, which would run "
            f"code when loaded; mvseg loads checkpoints with weights_only=True ({str(e).splitlines()[-1][:200]})"
        ) from e
    except (RuntimeError, EOFError, IndexError, ValueError) as e:  # torch's readers: truncated or damaged
        raise UnsafeCheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or damaged: "
            f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else '-'})"
        ) from e
    if not isinstance(obj, dict):
        raise UnsafeCheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a checkpoint (a dict with a state_dict)"
        )
    return obj


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with atomic local writes and weights-only loading (module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path, map_location=lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        fs = get_filesystem(path)
        if not fs.exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return safe_load(path, map_location)
