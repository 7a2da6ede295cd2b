"""The Locust run's settings, from ``SHARDPAY_*`` environment variables (see ``loadtest/locustfile.py``).

Every problem is a ``SystemExit`` with the variable and the value, raised before Locust forks its workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shardpay.config import ConfigError, env_float, env_int

DEFAULT_HOST = "http://127.0.0.1:8000"
GOOD_CARD = "4242424242424242"  # the PSP's test card that always succeeds


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    """``SHARDPAY_<name>``, read as the gateway reads its own settings."""
    try:
        return env_int(os.environ, name, default, minimum)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None


def _env_float(name: str, default: float) -> float:
    try:
        value = env_float(os.environ, name, default)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    if value <= 0:
        raise SystemExit(f"Config 'SHARDPAY_{name}' has value '{value}'. Must be > 0.")
    return value


def _env_wait() -> tuple[float, float]:
    raw = os.environ.get("SHARDPAY_LOCUST_WAIT", "0.1,1.0")
    try:
        low, high = (float(part) for part in raw.split(","))
    except ValueError:
        raise SystemExit(f"SHARDPAY_LOCUST_WAIT={raw!r} must be 'MIN,MAX' seconds, e.g. '0.1,1.0'") from None
    if not 0 <= low <= high:
        raise SystemExit(f"SHARDPAY_LOCUST_WAIT={raw!r} needs 0 <= MIN <= MAX")
    return low, high


def _psp_public_url() -> str | None:
    """Where the PSP's hosted pages are (the simulator's ``SHARDPAY_PSP_PUBLIC_URL``): when set, every checkout
    session's ``redirect_url`` must be there."""
    raw = os.environ.get("SHARDPAY_PSP_PUBLIC_URL", "").strip().rstrip("/")
    if raw and not raw.startswith(("http://", "https://")):
        raise SystemExit(f"Config 'SHARDPAY_PSP_PUBLIC_URL' has value '{raw}'. Not an http(s) URL.")
    return raw or None


def api_key() -> str:
    key = os.environ.get("SHARDPAY_API_KEY", "").strip()
    if not key:
        raise SystemExit(
            "SHARDPAY_API_KEY is not set. Export the merchant's secret key (sk_...) printed by "
            "`shardpay merchants create --name NAME --rate 100000 --burst 100000`, e.g. "
            "`export SHARDPAY_API_KEY=sk_...`."
        )
    return key


def load_funded_wallets(path: str | None) -> tuple[str, ...]:
    """Wallet ids from ``path``: one per line; blank lines and ``#`` comments are skipped."""
    if not path:
        return ()
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"SHARDPAY_FUNDED_WALLETS={path!r}: no such file (make one with the seed helper)")
    wallets = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        if not item.startswith("wal_"):
            raise SystemExit(f"{path}:{number}: {item!r} is not a wallet id (wal_...)")
        wallets.append(item)
    if len(wallets) < 2:
        raise SystemExit(f"SHARDPAY_FUNDED_WALLETS={path!r} holds {len(wallets)} wallet ids; transfers need >= 2")
    return tuple(dict.fromkeys(wallets))


@dataclass(frozen=True)
class Config:
    api_key: str
    funded: tuple[str, ...]
    currency: str
    wallets_per_user: int
    max_amount: int
    timeout: float
    max_attempts: int
    max_rate_limited: int
    wait: tuple[float, float]
    psp_public_url: str | None
    card: str
    follow_for: float

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            api_key=api_key(),
            funded=load_funded_wallets(os.environ.get("SHARDPAY_FUNDED_WALLETS")),
            currency=os.environ.get("SHARDPAY_CURRENCY", "USD").strip().upper(),
            wallets_per_user=_env_int("LOCUST_WALLETS_PER_USER", 3, minimum=0),
            max_amount=_env_int("LOCUST_MAX_AMOUNT", 1000),
            timeout=_env_float("LOCUST_TIMEOUT", 12.0),
            max_attempts=_env_int("LOCUST_MAX_ATTEMPTS", 6),
            max_rate_limited=_env_int("LOCUST_MAX_RATE_LIMITED", 20),
            wait=_env_wait(),
            psp_public_url=_psp_public_url(),
            card=os.environ.get("SHARDPAY_LOCUST_CARD", GOOD_CARD).strip(),
            follow_for=_env_float("LOCUST_FOLLOW_FOR", 60.0),
        )


_CONFIG: Config | None = None


def config() -> Config:
    """The settings, read on first use and kept."""
    global _CONFIG
    if _CONFIG is None:
        _CONFIG = Config.from_env()
    return _CONFIG
