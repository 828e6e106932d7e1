"""Accounts for people: who may use the hub, in which role, and who did what.

Modules: ``model`` (pure: principals, input shapes, hashing of secrets, the TTL cache and the
failure window), ``passwords`` (argon2), ``tables`` (SQL schema, in the ledger's database),
``store`` (:class:`AccountStore`), ``auth`` (:class:`Authenticator`: credentials ->
principal), ``asgi`` (the middleware and the sign-in gate of the pages), ``__main__`` (the
command line). The HTTP endpoints are in :mod:`server.api.accounts`.
"""
