"""The event stream: the outbox relay (shards -> RabbitMQ) and its consumers (webhooks, analytics).

Each long-running piece is a plain ``async def run_*(settings, stop)`` that returns once ``stop`` is set:
``events.relay.run_relay``, ``events.notifications.run_notifications``, ``events.analytics.run_analytics``.
Nothing is imported here, so ``events.outbox`` (for ``/metrics``) stays cheap to import.
"""
