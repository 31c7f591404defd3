"""How every command meets the user: checked flags, one-line errors, exit statuses, signals.

- A flag out of range is refused by argparse itself (the types below): `error: argument --img-size: ...`,
  exit status 2, before any work starts.
- A failure at run time ends the command with one line, `error: <file or flag>: <problem>`, and exit status 1,
  never a traceback. Every failure the code reports on purpose is a ValueError (CheckpointError, ManifestError,
  SourceError, OutputError, ...) or a FileNotFoundError whose message names the file; a loss that stops being
  finite is a FloatingPointError; an OSError from the system (a full disk) names its file. Anything else is a
  bug: it is reported in one line too, with the exception's type. `HSVLT_DEBUG=1` shows the traceback instead.
- SIGTERM (what a cluster sends before it takes a machine back) and Ctrl-C ask long work to stop at its next
  safe point (`StopRequest`): training saves last.pt between steps, the demo closes its video between frames.

Called as functions (tests), commands raise as usual: only `run_command` turns exceptions into exits.
"""

import argparse
import os
import signal
import sys

BAD_INPUT = (ValueError, FileNotFoundError, FloatingPointError)
_program: str | None = None  # how the command was invoked, when the `hsvlt` command runs it


def set_program(name: str) -> None:
    """Name the running command in its usage lines: `hsvlt train` rather than `python -m hsvlt.train`."""
    global _program
    _program = name


def program(default: str) -> str:
    """argparse's prog: the command as the user invoked it."""
    return _program or default


class UsageError(ValueError):
    """A flag whose value does not fit what it applies to (found after parsing: --attention-stage beyond the
    model's stages); exit status 2, as argparse's own refusals."""


def debugging() -> bool:
    return os.environ.get("HSVLT_DEBUG") == "1"


def describe_error(error: BaseException) -> str:
    """One line for the user: the project's own messages as they are, a system error as 'file: reason'."""
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.strerror:
        where = error.filename or "output"
        return f"{where}: {error.strerror}"
    if isinstance(error, BAD_INPUT) or isinstance(error, OSError):
        text = str(error).strip()
        return text.splitlines()[0] if text else type(error).__name__
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return f"unexpected {type(error).__name__}: {first} (HSVLT_DEBUG=1 shows where)"


class Interrupted(SystemExit, KeyboardInterrupt):
    """The exit of an interrupted command: the interpreter ends quietly with its status (a SystemExit), and a
    caller that stops on interruptions (a test, a driver script) still sees a KeyboardInterrupt."""


def run_command(work, *args):
    """work(*args) as a command: failures become `error: ...` on stderr with exit status 1, an interruption
    (Ctrl-C, SIGTERM) exit status 130 after the work's own clean-up ran."""
    if debugging():
        return work(*args)
    try:
        return work(*args)
    except UsageError as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interruption:
        print("interrupted", file=sys.stderr)
        raise Interrupted(130) from interruption  # 130: what shells report for a process ended by SIGINT
    except Exception as error:
        sys.exit(f"error: {describe_error(error)}")


class StopRequest:
    """While active, SIGTERM and SIGINT ask the work to stop at its next safe point instead of interrupting it
    wherever it is (a training step half applied cannot be resumed exactly); `requested` names the signal. A
    second signal interrupts at once. Outside the main thread (signals cannot be caught there) it does nothing."""

    def __init__(self):
        self.requested: str | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


# ---- argparse types: a value out of range is a usage error (exit status 2) naming the flag ----------------

def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def int_between(low: int, high: int):
    def parse(text: str) -> int:
        value = int_at_least(low)(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{value} is more than {high}")
        return value

    parse.__name__ = f"integer in {low}..{high}"
    return parse


def float_range(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    """A finite float in [low, high] (open ends where asked; high None: no upper bound)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if (below or above) and high is not None and not (low_open or high_open):
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        if below or above:
            interval = f"{'(' if low_open else '['}{low:g}, {'inf' if high is None else f'{high:g}'}" \
                       f"{')' if high_open or high is None else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is not in {interval}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_range(0.0, low_open=True)
non_negative_float = float_range(0.0)
unit_interval = float_range(0.0, 1.0)
image_size = int_at_least(32)  # four stages of stride 4, 2, 2, 2 leave a 1 x 1 map at 32 px
attention_stage = int_between(0, 3)
