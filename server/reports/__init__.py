"""The center's reports (seed §3.4, §4.4, §4.5, §5.3): the monthly evaluation of every unit and
its efficiency record, the weekly spot checks and their circular, the fortnightly
coordination report for the leadership group.

Pure cores, thin shells:

- ``periods``   months, ISO weeks and fortnights in the city's time zone (pure)
- ``policy``    the weighting, ranking and report thresholds, from ``policy.toml`` (pure)
- ``scorecard`` ledger rows and events -> per-request facts -> per-unit scorecards, the
  score, the rank and the change against the previous month (pure; the simulation's report
  uses it too)
- ``sampling``  the weekly spot-check draw: stratified by category, seeded (pure)
- ``fortnight`` the coordination report (pure)
- ``exports``   the reports as CSV rows; ``charts`` as SVG (pure)
- ``tables``    the spot checks and the efficiency records (SQLAlchemy Core)
- ``store``     reads the ledger for a period and keeps spot checks and records (I/O)
"""
