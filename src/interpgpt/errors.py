"""The exceptions the command line turns into one line: `UserError` (exit code 2) and
`Interrupted` (Ctrl-C, exit code 130)."""


class UserError(Exception):
    """Bad input from the user: the CLI prints it as one line and exits with code 2."""


class Interrupted(Exception):
    """A command stopped by Ctrl-C; the message says what was saved and how to resume."""
