"""Errors a user can cause; the CLI prints their message as one sentence and exits non-zero."""


class UserError(Exception):
    """A problem the user can fix (missing file, wrong format, no device, …).

    The message must be one sentence naming the file or option and the fix.
    """
