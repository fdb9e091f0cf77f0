"""`python -m graphrag.build --input DOCS --output INDEX [--root ROOT] [--update]`

Defaults come from the environment (GRAPH_RAG_INDEX_PATH, EMBEDDING_PROVIDER, VECTOR_STORE_PATH).
Exit status: 0 built, 1 nothing could be indexed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphrag.builder import BuildOptions, build_index
from graphrag.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS
from graphrag.settings import GraphRAGSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = GraphRAGSettings()
    parser = argparse.ArgumentParser(prog="python -m graphrag.build",
                                     description="Build or update a GraphRAG index from folders of documents.")
    parser.add_argument("--input", type=Path, action="append", required=True,
                        help="folder of Markdown/text/HTML/PDF files (repeat for several)")
    parser.add_argument("--output", type=Path, default=settings.graph_rag_index_path,
                        help="index folder (default: GRAPH_RAG_INDEX_PATH)")
    parser.add_argument("--root", type=Path, default=None,
                        help="citations are relative to this folder (default: the input folder)")
    parser.add_argument("--update", action="store_true",
                        help="reuse unchanged files of the current index (by size/mtime, then sha256)")
    parser.add_argument("--embedding-provider", default=settings.embedding_provider,
                        help="auto | none | minilm-int8 | minilm | e5 | hashing | st:/path (default: EMBEDDING_PROVIDER)")
    parser.add_argument("--vector-store", type=Path, default=settings.vector_store_path,
                        help="content-hash keyed vector cache (default: VECTOR_STORE_PATH)")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="chunk size bound")
    parser.add_argument("--overlap-chars", type=int, default=DEFAULT_OVERLAP_CHARS,
                        help="a last paragraph this short is repeated in the next chunk")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    inputs = [path.resolve() for path in args.input]
    for path in inputs:
        if not path.is_dir():
            print(f"graphrag.build: --input {path} is not a folder", file=sys.stderr)
            return 2
    if len(inputs) > 1 and args.root is None:
        print("graphrag.build: several --input folders need a common --root", file=sys.stderr)
        return 2
    options = BuildOptions(args.embedding_provider, args.vector_store, args.max_chars, args.overlap_chars)
    summary = build_index(inputs, args.output, root=args.root, update=args.update, options=options,
                          progress=None if args.quiet else _progress())
    for line in summary.lines():
        print(line)
    return 0 if summary.chunks else 1


def _progress():
    from graphrag.builder import stderr_progress

    return stderr_progress


if __name__ == "__main__":
    sys.exit(main())
