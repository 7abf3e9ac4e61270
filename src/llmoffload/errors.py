"""The one exception type the command line turns into a one-line error."""


class OffloadError(Exception):
    """Bad input or an impossible request, with a message fit for one line."""
