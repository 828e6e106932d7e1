"""The citizen told: messages to the caller's phone at intake and at each step that matters
to them, through a durable outbox with retries and a pluggable sender.

Modules: ``messages`` (templates file, checked at start; pure rendering), ``compose`` (pure:
which message a step sends, its idempotency key), ``delivery`` (pure: what an answer means,
backoff), ``outbox`` (Redis: queue, claim, record), ``senders`` (log file, webhook, memory),
``teller`` (what the operations call), ``record`` (a request's messages from the ledger).
"""
