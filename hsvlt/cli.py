"""Bad input ends a command with one line, `error: <file>: <problem>`, and exit status 1, never a traceback.

Every failure the code reports on purpose is a ValueError (CheckpointError, ExportError, SourceError, ...) or a
FileNotFoundError whose message names the file; a loss that stops being finite is a FloatingPointError.
Commands run their work through `exit_on_bad_input`; called as functions (tests), they raise as usual.
"""

import sys
import tempfile
from pathlib import Path

BAD_INPUT = (ValueError, FileNotFoundError, FloatingPointError)


def exit_on_bad_input(work, *args):
    """work(*args), with bad input reported as one line and exit status 1."""
    try:
        return work(*args)
    except BAD_INPUT as error:
        sys.exit(f"error: {error}")


def prepare_output(path: str | Path, suffix: str) -> Path:
    """Check that the output file `path` ends in `suffix` (any case, as the readers accept it) and that its folder
    exists (it is created) and can be written to; raises ValueError naming the file."""
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ValueError(f"{path}: output must end in {suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as error:
        raise ValueError(f"{path}: cannot write here ({error.strerror or error})") from None
    if path.is_dir() and suffix != ".mlpackage":
        raise ValueError(f"{path}: is a folder")
    return path
