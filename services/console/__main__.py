"""`python -m services.console` serves the web console on CONSOLE_HOST:CONSOLE_PORT (default 8090)."""

from __future__ import annotations

import sys


def main() -> int:
    from common.serve import serve
    from services.console.settings import ConsoleSettings

    from services.console.app import create_app

    serve('console', ConsoleSettings, create_app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
