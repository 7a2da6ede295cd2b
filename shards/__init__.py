"""PostgreSQL shards: pools, hash-slot routing, migrations and the ledger's SQL."""
