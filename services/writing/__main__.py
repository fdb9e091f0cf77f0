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
    from pydantic import ValidationError

    from services.writing.settings import WritingSettings

    try:
        settings = WritingSettings()
    except ValidationError as exc:
        sys.exit(f"writing: invalid configuration:\n{exc}")
    import uvicorn

    from services.writing.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
