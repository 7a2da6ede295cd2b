"""Failover drills (``shardpay drill NAME|all``) against the HA topology: load, one real fault, measurements."""
