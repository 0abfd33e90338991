"""The one way every dermsim command reports a user mistake: one line, exit code 2."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

# Errors a user can cause with a bad path, file or value. Library code raises these
# with a message naming the file or value and what was expected.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, PermissionError)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None):
    """Run a command's `main`, turning user errors into a one-line message.

    Set `DERMSIM_DEBUG=1` to see the full traceback instead.

    Args:
        main: The command's entry point; returns an exit code or None.
        argv: Arguments (default: `sys.argv[1:]`).
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        code = main(argv)
    except USER_ERRORS as err:
        if os.environ.get("DERMSIM_DEBUG"):
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
