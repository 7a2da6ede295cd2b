"""The high-availability topology on one machine (``make run-ha``): Patroni clusters with etcd, HAProxy, Redis
under Sentinel and a RabbitMQ node of its own, every one from Debian's packages, with all state under one
directory. It only changes shardpay's DSNs, URLs and settings (``Topology.env``): the code path is the one
``make run`` takes."""
