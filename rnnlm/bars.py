"""Progress bars for work that takes a while (reading a tarball, preparing a corpus, downloading, scoring): tqdm's,
on standard error, drawn after a second and gone when the work is done.

tqdm measures a terminal once, and draws nothing on one that says it is 0 x 0 (a fresh pseudo-terminal: `script`,
`docker exec -t` before its size is set): it hides bars below the last row. These bars ask for the width at every
redraw, take 80 columns where it is 0, and count 24 rows. Training's own line (`rnnlm.console.Progress`) is
measured the same way.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from typing import Any, TextIO


def bar(total: float | None, what: str, unit: str = "char", shown: bool = True, delay: float = 1.0,
        **more: Any) -> Any:
    """A bar of `total` units (scaled: k, M, G) labelled `what`, drawn only on a terminal and only if `shown`."""
    from tqdm import tqdm

    stream = more.pop("file", None) or sys.stderr
    drawn = tqdm(total=total, desc=what, unit=unit, unit_scale=True, disable=None if shown else True, delay=delay,
                 leave=False, file=stream, ncols=width(stream), nrows=24, **more)
    measure(drawn)
    return drawn


def measure(drawn: Any) -> None:
    """Measure the terminal at each redraw of tqdm bar `drawn`, as its dynamic_ncols would, but 80 where it says 0."""
    drawn.dynamic_ncols = lambda stream: (width(stream), 24)


def width(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to; 80 where it says 0, the environment's where it cannot be asked."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return shutil.get_terminal_size((80, 24)).columns
