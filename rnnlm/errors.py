"""The one exception type for mistakes a user can make.

Anything raised as `RnnlmError` is printed by the CLI as a short message with exit status 2 and no
traceback. Bugs are left to raise whatever they raise.
"""


class RnnlmError(Exception):
    """A mistake the user can fix: bad config, missing file, unusable checkpoint, ..."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (200 characters at most), or its type's name when it has none:
    what a one-line message quotes of a library's error."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
