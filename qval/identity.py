"""Content-hash identities: canonical JSON of everything that changes an output → sha256."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Bump when the meaning of an identity field changes, so old results are never mistaken for new ones.
IDENTITY_VERSION = 1


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
