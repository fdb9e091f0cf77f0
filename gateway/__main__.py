"""`python -m gateway serve` runs the gateway; `python -m gateway keys ...` manages API keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import redis.asyncio as aioredis
from pydantic import ValidationError

from gateway.keys import APIKeyStore, RecordSigner
from gateway.settings import GatewaySettings


def _settings() -> GatewaySettings:
    try:
        return GatewaySettings()
    except ValidationError as exc:
        sys.exit(f"gateway: invalid configuration:\n{exc}")


async def _with_store(action):
    settings = _settings()
    redis = aioredis.from_url(settings.redis_url)
    try:
        return await action(APIKeyStore(redis, RecordSigner(settings.key_signing_secret)))
    finally:
        await redis.aclose()


async def _ensure_dev_key(store: APIKeyStore, path: Path, rpm: int) -> str:
    """Reuse the key in `path` while Redis still knows it; otherwise create one and write it there."""
    if path.exists():
        plain = path.read_text().strip()
        if plain and await store.lookup(plain):
            return plain
    plain, _ = await store.create("dev", classification="private", rpm=rpm, role="admin", user_id="dev")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(plain + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return plain


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gateway (GATEWAY_HOST:GATEWAY_PORT)")
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--classification", choices=["private", "public"], default="private",
                        help="default data classification of the key's requests (private: never sent to the cloud)")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute (default GATEWAY_DEFAULT_RPM)")
    create.add_argument("--role", choices=["student", "teacher", "admin"], default="student",
                        help="what the key may see: a student its own data, a teacher its courses, an admin everything")
    create.add_argument("--user-id", default=None, help="the learner or teacher this key acts for")
    keys.add_parser("list", help="list keys (never the secret)")
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    dev = keys.add_parser("ensure-dev", help="create the development key once and keep it in a local file")
    dev.add_argument("--file", type=Path, default=Path(".tutorstack/dev-api-key"))
    dev.add_argument("--rpm", type=int, default=600)
    args = parser.parse_args(argv)

    if args.command == "serve":
        import uvicorn

        settings = _settings()  # fail fast, once, on a bad configuration
        if settings.app_env == "dev" and not os.environ.get("GATEWAY_KEY_SIGNING_SECRET"):
            # every worker must sign with the same (generated) dev secret
            os.environ["GATEWAY_KEY_SIGNING_SECRET"] = settings.key_signing_secret
        # Each worker builds its own app (import-string factory); limits and keys live in Redis,
        # so they hold across workers.
        uvicorn.run("gateway.app:create_app_from_env", factory=True, workers=settings.worker_count,
                    host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=5,
                    loop="uvloop", http="httptools", backlog=2048)
    elif args.keys_command == "create":
        rpm = args.rpm or _settings().default_rpm
        plain, key = asyncio.run(_with_store(lambda s: s.create(
            args.name, classification=args.classification, rpm=rpm, role=args.role, user_id=args.user_id)))
        print(f"id={key.id} name={key.name} classification={key.classification} rpm={key.rpm} role={key.role} "
              f"user_id={key.user_id or '-'}", file=sys.stderr)
        print(plain)
    elif args.keys_command == "list":
        for key in asyncio.run(_with_store(lambda s: s.list())):
            print(f"{key.id}  {key.name:20s} {key.classification:8s} rpm={key.rpm} role={key.role} "
                  f"user_id={key.user_id or '-'}")
    elif args.keys_command == "revoke":
        if not asyncio.run(_with_store(lambda s: s.revoke(args.key_id))):
            sys.exit(f"no key with id {args.key_id}")
        print(f"revoked {args.key_id}")
    elif args.keys_command == "ensure-dev":
        print(asyncio.run(_with_store(lambda s: _ensure_dev_key(s, args.file, args.rpm))))


if __name__ == "__main__":
    main()
