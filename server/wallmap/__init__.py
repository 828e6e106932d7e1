"""The wall map's live data: the map's state read once a second per process and sent as
deltas (``/ws/map``), the day's figures (``GET /api/v1/map/figures``) and the ticker.

Modules: ``state`` (reading the map, and the pure diff between two reads), ``figures`` (the
day's counts from the ledger), ``ticker`` (events made fit for a wall: no caller data),
``watch`` (the one reader per process), ``socket`` (one wall's connection), ``routes``.
"""
