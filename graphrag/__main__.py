"""`python -m graphrag serve [--build-from DIR ...]` runs the service on GRAPHRAG_HOST:GRAPHRAG_PORT
(default 8002); with --build-from it first brings the index up to date with those folders
(an incremental build, relative to the current directory), so `make run` needs one line.
`python -m graphrag build ...` is `python -m graphrag.build ...`."""

import argparse
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

        parser = argparse.ArgumentParser(prog="python -m graphrag serve")
        parser.add_argument("--build-from", action="append", default=[], metavar="DIR",
                            help="folders to index (incrementally) before serving; citations relative to cwd")
        args = parser.parse_args(rest)
        try:
            settings = GraphRAGSettings()
        except ValidationError as exc:
            sys.exit(f"graphrag: invalid configuration:\n{exc}")
        if args.build_from and settings.graph_rag_enabled:
            from graphrag.build import main as build_main

            folders = [arg for folder in args.build_from for arg in ("--input", folder)]
            code = build_main([*folders, "--root", ".", "--update", "--output", str(settings.graph_rag_index_path)])
            if code != 0:
                print("graphrag: the start-up build indexed nothing; serving without an index", file=sys.stderr)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                    timeout_graceful_shutdown=5)
        return 0
    print("usage: python -m graphrag [serve | build --input DOCS --output INDEX ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
