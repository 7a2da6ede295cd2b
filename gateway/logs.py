"""One JSON line per request on stdout; nothing secret (no keys, no bodies) ever goes in."""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson


def log(event: str, **fields: Any) -> None:
    line = {"ts": round(time.time(), 3), "event": event, **fields}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
