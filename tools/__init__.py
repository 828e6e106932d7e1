"""Tools for the people who build the hub, not part of the product: the load test
(``python -m tools.loadtest``), the micro-benchmarks (``python -m tools.bench``), the delivery
benchmark, the lean probe (``tools/probe/``) and the front-end vendoring script.

Hubs are started through :mod:`server.launch`, the one launcher the tests, the tools and the
demo share.
"""
