"""`python -m services.feedback [serve]` runs the feedback service on FEEDBACK_HOST:FEEDBACK_PORT (default 8007).

`python -m services.feedback seed-demo [--rounds 40] [--consistency 0.9] [--seed 0]` writes simulated
arena rounds and votes into the store (demo mode; see services/feedback/demo.py).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str]) -> int:
    from common.serve import load_settings, serve
    from services.feedback.settings import FeedbackSettings

    command = argv[0] if argv else "serve"
    settings = load_settings('feedback', FeedbackSettings)
    if command == "serve":
        from services.feedback.app import create_app

        serve('feedback', settings, create_app)
        return 0
    if command == "seed-demo":
        from services.feedback.demo import seed_demo
        from services.feedback.store import FeedbackStore

        parser = argparse.ArgumentParser(prog="python -m services.feedback seed-demo")
        parser.add_argument("--rounds", type=int, default=40)
        parser.add_argument("--mode", default="peer")
        parser.add_argument("--control", default="peer-v1")
        parser.add_argument("--candidate", default="base")
        parser.add_argument("--consistency", type=float, default=0.9)
        parser.add_argument("--seed", type=int, default=0)
        args = parser.parse_args(argv[1:])
        store = FeedbackStore(settings.db_path)
        counts = seed_demo(store, rounds=args.rounds, mode=args.mode, control=args.control,
                           candidate=args.candidate, consistency=args.consistency, seed=args.seed)
        print(json.dumps({"db": str(settings.db_path), **counts}))
        return 0
    print("usage: python -m services.feedback [serve | seed-demo ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
