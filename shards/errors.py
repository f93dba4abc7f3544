"""The error types every package raises for the CLI to report.

`UserError` means "the user's input is wrong": the CLI prints it as one line and exits 2.
`StageFailed` means a stage ran but some of its work still failed after retries: exit 1.
"""


class UserError(Exception):
    """Bad input: a malformed file, a wrong config key, a bad checkpoint.

    The message must name the input (file, key, URL) and fit on one line.
    """

    exit_code = 2


class StageFailed(Exception):
    """A stage ran but some of its work still failed after retries (exit 1)."""

    exit_code = 1
