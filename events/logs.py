"""One JSON line on stderr per notable thing; never a secret, a signature or a webhook URL."""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson


def emit(event: str, **fields: Any) -> None:
    line = {"ts": round(time.time(), 3), "event": event, **fields}
    sys.stderr.write(orjson.dumps(line, default=str).decode() + "\n")
    sys.stderr.flush()
