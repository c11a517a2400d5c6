"""The one exception the command line turns into a one-line message (exit code 2)."""


class UserError(Exception):
    """Bad input from the user: the CLI prints it as one line and exits with code 2."""
