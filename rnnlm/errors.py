"""The one exception type for mistakes a user can make.

Anything raised as `RnnlmError` is printed by the CLI as a short message with exit status 2 and no
traceback. Bugs are left to raise whatever they raise.
"""


class RnnlmError(Exception):
    """A mistake the user can fix: bad config, missing file, unusable checkpoint, ..."""
