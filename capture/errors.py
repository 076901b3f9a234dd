"""Errors a user can cause in capture and I/O; the CLI reports them without a traceback."""


class CaptureError(Exception):
    """A problem with a recording, a device or a file the user can fix.

    The message must be one sentence naming the file or device and the fix.
    """
