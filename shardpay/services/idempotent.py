"""Where an idempotency key's durable record lives: on its home shard, chosen by the merchant and the key alone.

A write whose effect lives on the key's home shard (a wallet, whose slot follows the key; a transfer from a
wallet there) stores its response there, in the transaction of its effect. A write whose effect lives on another
shard (a transfer from a wallet there) first claims the key at home (``ledger.Claim``, a step of that shard's next
tick), then stores its response with its effect. So the same key with other parameters always meets the first
request's record or claim at home, and answers 422, even after Redis forgot the key, wherever its own effect
would have lived. The claim costs a tick step on a second shard for those writes (measured in the README).
"""

from __future__ import annotations

from shardpay import ids
from shardpay.services.outcome import key_reused
from shards import ledger
from shards.errors import on_shard
from shards.pools import Shards


def home_slot(scope: str, key: str) -> int:
    """The slot of a key's home: ``scope`` is the merchant (or the operator's namespace for CLI writes)."""
    return ids.slot_for(scope, key)


async def claim(shards: Shards, scope: str, key: str, fingerprint: str, effect_shard: int) -> None:
    """Make sure the key is this request's (422 otherwise) before an effect on ``effect_shard``; nothing to do
    when that is the key's home, where the effect's own record decides."""
    home = shards.index_of(home_slot(scope, key))
    if home == effect_shard:
        return
    result = await on_shard(home, shards.ticks[home].claim(ledger.Claim(scope, key, fingerprint)))
    if result != "claimed":
        raise key_reused()
