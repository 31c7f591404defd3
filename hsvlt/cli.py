"""Bad input ends a command with one line, `error: <file>: <problem>`, and exit status 1, never a traceback.

Every failure the code reports on purpose is a ValueError (CheckpointError, ExportError, SourceError, ...) or a
FileNotFoundError whose message names the file; a loss that stops being finite is a FloatingPointError.
Commands run their work through `exit_on_bad_input`; called as functions (tests), they raise as usual.
"""

import sys

BAD_INPUT = (ValueError, FileNotFoundError, FloatingPointError)


def exit_on_bad_input(work, *args):
    """work(*args), with bad input reported as one line and exit status 1."""
    try:
        return work(*args)
    except BAD_INPUT as error:
        sys.exit(f"error: {error}")
