"""The Redis layer: every key (:mod:`keys`), every Lua script (``lua/``, registered by
:mod:`scripts`), and the stores that read and write through them (:mod:`requests`,
:mod:`squads`, :mod:`positions`); the embedded Redis for the README's run command, the
round-trip counter, and how an outage is told from a bug (:mod:`availability`).

Nothing outside this package builds a key or names a script's KEYS and ARGV by hand.
"""
