"""`python -m services.writing [serve]` runs the service on WRITING_HOST:WRITING_PORT (default 8004).
`python -m services.writing train ...` is `python -m services.writing.train_scorer ...`."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("serve", [])
    if command == "train":
        from services.writing.train_scorer import main as train_main

        return train_main(rest)
    if command != "serve":
        print("usage: python -m services.writing [serve | train ...]", file=sys.stderr)
        return 2
    from common.serve import serve
    from services.writing.settings import WritingSettings

    from services.writing.app import create_app

    serve('writing', WritingSettings, create_app)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
