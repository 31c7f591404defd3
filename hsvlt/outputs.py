"""Writing outputs so that a user's file is never overwritten by accident or lost half-written.

Every file a command writes goes through here:

- `atomic_write(path)` / `write_bytes` / `write_text` / `write_json`: the bytes go to a temporary file beside
  `path`, are flushed to disk, and only then renamed over `path` (os.replace is atomic on one file system). A
  crash, a signal or a full disk at any moment leaves the previous file or the new one, never a broken one.
- `atomic_path(path)`: the same for libraries that write by file name (ONNX, OpenCV, coremltools); a folder
  (an .mlpackage) is swapped in whole.
- `check_output_file(path, suffix)`: before the work starts, the output's suffix, folder and write access.
- `run_folder(path, exist_ok)`: a run never lands silently in a folder that holds an earlier run; the next free
  name is taken instead (runs/hsvlt, runs/hsvlt2, runs/hsvlt3, ...), as Ultralytics users know it.

A write that fails (a full disk, a read-only folder) raises OutputError, one line naming the file.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path


class OutputError(OSError, ValueError):
    """An output that cannot be written; the message is one line naming the file and the reason. An OSError (a
    full disk is one) and a ValueError (the project's bad-input errors) at once."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _temporary_name(path: Path) -> Path:
    """A fresh name beside `path` that keeps its suffix (OpenCV picks the encoder by it): .name.XXXX.suffix"""
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (the folder's entry); not every platform can open a folder."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | Path, folder: bool = False):
    """Yield a temporary path beside `path` for a writer that takes a file name; when the block ends without an
    error, it replaces `path` (for `folder`, the previous folder is removed only after the new one is in place).
    On any error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary_name(path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write here ({_reason(error)})") from None
    if folder:
        temporary.unlink()
    try:
        yield temporary
        if not temporary.exists() or (not folder and temporary.stat().st_size == 0):
            raise OutputError(f"{path}: nothing was written")
        if folder:
            previous = None
            if path.exists():
                previous = _temporary_name(path)
                previous.unlink()
                path.rename(previous)
            temporary.rename(path)
            if previous is not None:
                shutil.rmtree(previous) if previous.is_dir() else previous.unlink()
        else:
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        _fsync_folder(path.parent)
    except OSError as error:
        raise OutputError(f"{path}: cannot write it ({_reason(error)}); the previous file, if any, is unchanged") \
            from None
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb"):
    """Yield an open stream whose content replaces `path` when the block ends without an error."""
    with atomic_path(path) as temporary:
        try:
            with open(temporary, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as stream:
                yield stream
                stream.flush()
        except OSError as error:
            raise OutputError(f"{path}: cannot write it ({_reason(error)}); the previous file, if any, is "
                              f"unchanged") from None


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as stream:
        stream.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w") as stream:
        stream.write(text)
    return Path(path)


def write_json(path: str | Path, value) -> Path:
    return write_text(path, json.dumps(value, indent=2) + "\n")


def check_output_file(path: str | Path, suffix: str) -> Path:
    """Before the work: the output file `path` ends in `suffix` (any case, as the readers accept it), is not a
    folder (except an .mlpackage, which is one), and its folder exists (it is created) and can be written to."""
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise OutputError(f"{path}: output must end in {suffix}")
    if path.is_dir() and suffix != ".mlpackage":
        raise OutputError(f"{path}: is a folder")
    if suffix == ".mlpackage" and path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file, not an .mlpackage folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as error:
        raise OutputError(f"{path}: cannot write here ({_reason(error)})") from None
    return path


def check_output_folder(path: str | Path, flag: str = "--out") -> Path:
    """An output folder that may not exist yet, but must not be a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: is a file, not a folder")
    return path


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies below it (both resolved: links and '..' do not hide it)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_apart_from_inputs(out: str | Path, inputs: list[str | Path], flag: str = "--out") -> None:
    """Refuse an output folder among the inputs: an input folder or a folder below it, or the folder that holds an
    input file (its outputs would sit beside, or replace, the user's files)."""
    out = Path(out)
    for source in map(Path, inputs):
        if source.is_dir() and is_inside(out, source):
            raise OutputError(f"{flag} {out}: is inside the input folder {source}; outputs never land among the "
                              f"inputs")
        if source.is_file() and out.exists() and out.resolve() == source.parent.resolve():
            raise OutputError(f"{flag} {out}: is the folder of the input {source}; choose another output folder")


def run_folder(path: str | Path, exist_ok: bool = False, flag: str = "--out") -> Path:
    """The folder a new run writes into: `path` itself when it does not exist or is empty (or with `exist_ok`),
    else the first free name of path2, path3, ... (a trailing number is counted on: runs/exp2 -> runs/exp3).
    The folder is created."""
    path = check_output_folder(path, flag)
    if not exist_ok and path.is_dir() and any(path.iterdir()):
        stem, number = re.fullmatch(r"(.*?)(\d*)", path.name).groups()
        number = int(number) if number else 1
        while True:
            number += 1
            candidate = path.with_name(f"{stem}{number}")
            if not candidate.exists() or (candidate.is_dir() and not any(candidate.iterdir())):
                path = candidate
                break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{flag} {path}: cannot create the folder ({_reason(error)})") from None
    return path


def save_figure(figure, path: str | Path, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG (or the suffix's format), written atomically."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi)
    return Path(path)


def save_npz(path: str | Path, **arrays) -> Path:
    with atomic_write(path) as stream:
        import numpy as np

        np.savez(stream, **arrays)
    return Path(path)
