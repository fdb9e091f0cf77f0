"""`python -m common.launch SERVICE -- COMMAND ...`: run COMMAND with only the credentials SERVICE
may hold (common.secrets.SECRETS_BY_SERVICE). The Procfile starts every service through it."""

from __future__ import annotations

import os
import sys

from common.secrets import SECRETS_BY_SERVICE, environment_for


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--" or argv[0] not in SECRETS_BY_SERVICE:
        sys.exit(f"usage: python -m common.launch {{{','.join(SECRETS_BY_SERVICE)}}} -- COMMAND ...")
    env = environment_for(argv[0], dict(os.environ))
    os.execvpe(argv[2], argv[2:], env)  # replaces this process: signals reach the service directly


if __name__ == "__main__":
    main(sys.argv[1:])
