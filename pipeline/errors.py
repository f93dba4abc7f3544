"""The one exception type that means "the user's input is wrong".

Leaf module (stdlib only) so the libraries can raise it without importing the
rest of `pipeline`. The CLI prints it as one line and exits with code 2.
"""


class UserError(Exception):
    """Bad input: a malformed file, a wrong config key, a bad checkpoint.

    The message must name the input (file, key, URL) and fit on one line.
    """

    exit_code = 2


class StageFailed(Exception):
    """A stage ran but some of its work still failed after retries (exit 1)."""

    exit_code = 1
