"""The load test: ``python -m tools.loadtest --squads N --rate R ...`` (see :mod:`.run`).

Modules: :mod:`.run` the orchestrator and its report, :mod:`.client` a load-generator
process holding thousands of squad sockets, :mod:`.ws` its sans-I/O WebSocket codec,
:mod:`.squad` a squad's behaviour, :mod:`.http_client` the lean HTTP/1.1 client of timed
intakes, :mod:`.plan` where squads and requests are, :mod:`.stats` the arithmetic,
:mod:`.floor` the bare dispatch to compare with, :mod:`.rolling` the rolling restart and its
checks against Redis, :mod:`.profiles` py-spy summaries.
"""
