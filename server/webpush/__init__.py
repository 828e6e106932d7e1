"""Web Push to squads' phones: a backgrounded phone cannot keep its socket, so an offer (and a
supervision notice) also goes out as a Web Push that wakes it.

* :mod:`.vapid`: the hub's VAPID key (RFC 8292), made once and kept 0600, and the signed
  ``Authorization`` header for a push service.
* :mod:`.subscriptions`: a squad's subscription (the browser's ``PushSubscription``), checked
  against the allowed push services, kept in Redis with a copy in every process.
* :mod:`.message`: which hub frames wake a phone, what the push says (pure), and its
  encryption (RFC 8291, ``aes128gcm``).
* :mod:`.pusher`: :class:`WebPush`, the one hook the hub calls for each numbered frame
  (never blocks, never touches Redis) and the background senders.

The socket stays the source of truth: a push carries no more than the notification needs,
and a lost or late push loses nothing (the offer waits in the squad's outbox).
"""
