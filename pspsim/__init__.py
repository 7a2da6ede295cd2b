"""The PSP simulator: a stand-in for a real payment service provider (``../shared/PSP.md``).

It is its own process with its own database; shardpay reaches it only over HTTP through ``psp.simulator``.
"""
