"""`python -m graphrag serve` runs the service on GRAPHRAG_HOST:GRAPHRAG_PORT (default 8002);
`python -m graphrag build ...` is `python -m graphrag.build ...`."""

import sys


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("serve", [])
    if command == "build":
        from graphrag.build import main as build_main

        return build_main(rest)
    if command == "serve":
        import uvicorn
        from pydantic import ValidationError

        from graphrag.app import create_app
        from graphrag.settings import GraphRAGSettings

        try:
            settings = GraphRAGSettings()
        except ValidationError as exc:
            sys.exit(f"graphrag: invalid configuration:\n{exc}")
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                    timeout_graceful_shutdown=5)
        return 0
    print("usage: python -m graphrag [serve | build --input DOCS --output INDEX ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
