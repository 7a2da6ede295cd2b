"""shardpay: a sharded, idempotent, rate-limited payment gateway."""
