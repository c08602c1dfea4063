"""Who may call the gateway: API keys, and a throttle on failed attempts per client address.

- **API keys** come from `SUPPORTLM_API_KEYS` ("k1,k2" or "id1:k1,id2:k2") and/or a keys file
  (`key_id: key` per line, `#` comments). Clients send `Authorization: Bearer <key>` (OpenAI style)
  or `X-API-Key: <key>`. Keys are compared as SHA-256 digests with `hmac.compare_digest` against
  every stored key (no early exit), so timing says nothing about which key or how much matched.
  Only the key id is ever logged; a key without an id gets `key-<first 8 hex of its sha256>`.
  A key shorter than `min_key_length` (default 16) is refused at startup: `sk-dev` can be guessed.
- **Failed attempts**: every 401 costs the client address one unit of a bucket (`auth_fail_burst`,
  refilled at `auth_fail_rate_per_s`); an empty bucket answers 429 `too_many_auth_failures` before the
  key is even looked at, and only the first refusal per address and minute is logged. Behind a proxy the
  address is the proxy's unless uvicorn is told to trust `X-Forwarded-For` (docs/deployment.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from supportlm.errors import ConfigError
from supportlm.serve.budgets import Buckets

MIN_KEY_LENGTH = 16
KEYGEN = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def default_key_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass
class KeyStore:
    """key id -> SHA-256 of the key. Empty store = no keys configured."""

    digests: dict[str, bytes] = field(default_factory=dict)
    min_length: int = MIN_KEY_LENGTH

    def add(self, key_id: str, key: str, where: str = "SUPPORTLM_API_KEYS") -> None:
        key_id, key = key_id.strip(), key.strip()
        if not key:
            raise ConfigError(f"{where}: API key `{key_id}` is empty")
        if len(key) < self.min_length:
            raise ConfigError(
                f"{where}: API key `{key_id}` is {len(key)} characters; keys must have at least {self.min_length} "
                f"(serve.limits.min_key_length) so they cannot be guessed. Make one with: {KEYGEN}"
            )
        if key_id in self.digests:
            raise ConfigError(f"{where}: API key id `{key_id}` is defined twice")
        self.digests[key_id] = _digest(key)

    def __len__(self) -> int:
        return len(self.digests)

    def check(self, presented: str | None) -> str | None:
        """The key id if `presented` is a known key, else None. Constant time in the key's content."""
        if not presented:
            return None
        probe = _digest(presented)
        found: str | None = None
        for key_id, digest in self.digests.items():  # no early exit
            if hmac.compare_digest(probe, digest) and found is None:
                found = key_id
        return found

    @classmethod
    def load(
        cls, env_value: str | None = None, path: Path | None = None, min_length: int = MIN_KEY_LENGTH
    ) -> KeyStore:
        store = cls(min_length=min_length)
        for item in (env_value or "").split(","):
            item = item.strip()
            if not item:
                continue
            key_id, sep, key = item.partition(":")
            if sep and key.strip() and key_id.strip():
                store.add(key_id, key)
            else:
                store.add(default_key_id(item), item)
        if path is not None:
            if not path.is_file():
                raise ConfigError(f"api keys file not found: {path}")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key_id, sep, key = line.partition(":")
                if not sep or not key_id.strip() or not key.strip():
                    raise ConfigError(
                        f"{path}:{n}: expected `key_id: key`"
                    )  # never echo the line: it holds a key
                store.add(key_id, key, where=f"{path}:{n}")
        return store


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key from `Authorization: Bearer ...` or `X-API-Key`, from raw ASGI headers."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


class AuthThrottle:
    """Failed authentications per client address (module docstring)."""

    def __init__(self, buckets: Buckets, burst: int, rate_per_s: float) -> None:
        self.buckets, self.burst, self.rate_per_s = buckets, burst, rate_per_s
        self._logged: dict[str, float] = {}

    def _name(self, address: str) -> str:
        return "authfail:" + address

    async def blocked(self, address: str) -> float:
        """Seconds until this address may try again (0.0: go ahead): its failure budget is spent."""
        return await self.buckets.peek(self._name(address), self.burst, self.rate_per_s, 1.0)

    async def failed(self, address: str) -> None:
        await self.buckets.take(self._name(address), self.burst, self.rate_per_s, 1.0)

    def should_log(self, address: str, now: float | None = None) -> bool:
        """The first refusal per address and minute is logged; the rest only count in the metrics."""
        now = time.monotonic() if now is None else now
        if now - self._logged.get(address, -1e9) < 60:
            return False
        if len(self._logged) > 10_000:
            self._logged = {a: t for a, t in self._logged.items() if now - t < 60}
        self._logged[address] = now
        return True
