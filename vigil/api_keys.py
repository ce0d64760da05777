"""API keys of the scoring endpoint, kept as SHA-256 hashes only.

A key is 32 random bytes (``vgl_`` + URL-safe text), so a fast hash is enough: nothing can be
guessed from it, and a stolen file gives no usable key. The plain key is shown once, when it is
created. Checks compare digests in constant time against every stored key, so the time a check
takes says nothing about which key came close. The file is 0600 and rewritten atomically; the
endpoint rereads it when it changes, so a key created or revoked takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

PREFIX = "vgl_"
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_KEYS = 1_000
MAX_PRESENTED = 200  # longer header values are not hashed at all


class KeyError_(ValueError):
    """A key name or key file Vigil cannot use; the message says which and why."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read(path: Path) -> list[dict]:
    """The stored keys (name, sha256, created_at); none when the file does not exist."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return []
    except (OSError, json.JSONDecodeError) as exc:
        raise KeyError_(f"API key file {path} is unreadable ({exc}); fix or delete it") from exc
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) and {"name", "sha256"} <= k.keys() for k in keys):
        raise KeyError_(f"API key file {path} must hold {{\"keys\": [{{\"name\", \"sha256\"}}, ...]}}")
    return keys


def _write(path: Path, keys: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"keys": keys}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def create(path: Path, name: str) -> str:
    """A new key named ``name``; returns the plain key (the only time it exists outside a client)."""
    if not NAME.fullmatch(name):
        raise KeyError_(f"key name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    keys = read(path)
    if any(k["name"] == name for k in keys):
        raise KeyError_(f"a key named {name!r} exists; revoke it first or pick another name")
    if len(keys) >= MAX_KEYS:
        raise KeyError_(f"{MAX_KEYS} keys already; revoke some first")
    key = PREFIX + secrets.token_urlsafe(32)
    keys.append({"name": name, "sha256": digest(key), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    _write(path, keys)
    return key


def revoke(path: Path, name: str) -> bool:
    keys = read(path)
    kept = [k for k in keys if k["name"] != name]
    if len(kept) == len(keys):
        return False
    _write(path, kept)
    return True


@dataclass(frozen=True)
class KeyRing:
    """The stored digests, for checks (name by digest)."""

    names: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> "KeyRing":
        return cls({k["sha256"]: k["name"] for k in read(path)})

    def check(self, presented: str | None) -> str | None:
        """The key's name if ``presented`` is a stored key, else None (constant time per stored key)."""
        if not presented or len(presented) > MAX_PRESENTED:
            return None
        d = digest(presented).encode()
        found = None
        for stored, name in self.names.items():
            if hmac.compare_digest(d, stored.encode()):
                found = name
        return found
