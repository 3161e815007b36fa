"""The one exception type for mistakes a user can make.

Anything raised as `RnnlmError` is printed by the CLI as a short message with exit status 2 and no
traceback. Bugs are left to raise whatever they raise. Under torchrun every process finds the same mistake in
the same command line: it is said once (`AlreadySaid` for the others), not once a process.
"""

import contextlib
import os
import shlex
import time
from collections.abc import Iterator


class RnnlmError(Exception):
    """A mistake the user can fix: bad config, missing file, unusable checkpoint, ..."""


class AlreadySaid(RnnlmError):
    """A mistake another process of the same torchrun job reported in the same words: this process leaves with
    the same exit status, silently."""

    def wait(self) -> None:
        """Lets the process that says the mistake leave first: torchrun ends every other process the moment one
        exits, so one leaving silently before it would end it unheard. torchrun ends this one when it has; it leaves
        by itself after SPEAKER_WAIT seconds."""
        time.sleep(SPEAKER_WAIT)


SPEAKER_WAIT = 20.0


@contextlib.contextmanager
def said_once_per_machine() -> Iterator[None]:
    """Mistakes found before torchrun's processes meet (a config, the command line, files of this machine) are the
    same in every process of a machine: its LOCAL_RANK 0 says them. Once they have met, see
    `rnnlm.distributed.setup`."""
    try:
        yield
    except RnnlmError as e:
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # LOCAL_RANK alone may be a launcher's leftover
        if launched and os.environ.get("LOCAL_RANK", "0") != "0" and not isinstance(e, AlreadySaid):
            raise AlreadySaid(str(e)) from None
        raise


def shell_word(path: object) -> str:
    """A path as a word of a command printed to be pasted: quoted when a shell would split it (a run named
    `my run`) or read its characters."""
    return shlex.quote(str(path))


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (200 characters at most), or its type's name when it has none:
    what a one-line message quotes of a library's error."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
