"""How a stage stops on Ctrl-C (SIGINT) and SIGTERM: as on an error, through its own way out.

The first signal raises in the main thread (KeyboardInterrupt, or Terminated for SIGTERM), so
the stage ends its MLflow run (FAILED, or KILLED for SIGTERM), removes its temp files and keeps
its resume file; later ones are ignored, so that the way out is not cut short. The exit code is
128 + the signal, what a shell and DVC read as "stopped".
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the stage. A KeyboardInterrupt, so that code which tidies up after Ctrl-C
    (and skips `except Exception`) treats both alike."""


def run_status(error: BaseException) -> str:
    """The MLflow status of a run a stage leaves on `error`: KILLED for SIGTERM, else FAILED."""
    return "KILLED" if isinstance(error, Terminated) else "FAILED"


@contextlib.contextmanager
def stopping(received: list[int]) -> Iterator[None]:
    """Within the block SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated, once; the
    signal's number is appended to `received`. Set whatever the start-up left: Python keeps
    SIGINT ignored when it was inherited ignored (a script's background job, `nohup`), and Ctrl-C
    must still stop the stage. Off the main thread, where no handler can be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for other in EXIT_CODES:
            signal.signal(other, signal.SIG_IGN)
        received.append(signum)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {signum: signal.signal(signum, handler) for signum in EXIT_CODES}
    try:
        yield
    finally:
        for signum, old in previous.items():
            if old is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, old)
