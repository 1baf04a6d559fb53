"""The one exception type a user sees: a one-line message that names the file and the fix."""


class VggEdgeError(Exception):
    """A problem with the user's input or environment; the CLI prints it without a traceback."""
