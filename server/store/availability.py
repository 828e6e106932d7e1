"""Whether Redis answers: one warning when it is lost, one when it is back.

While Redis restarts, every background loop and every phone's frame fails in turn; logging
each failure (a traceback every loop turn, a line per frame) buries the one fact an operator
needs. Everything that meets an outage reports it here instead: the first failure logs a
warning, the first success after it logs how long Redis was away and how many operations
failed meanwhile. Errors that are not outages (a script bug, a wrong type) are not this
module's business: callers log those as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)


def is_outage(exc: BaseException) -> bool:
    """Redis cannot be reached (refused, reset, timed out, still loading its data)."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)


class RedisAvailability:
    """Counts failures during an outage and logs only its start and its end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_since: float | None = None
        self.failures = 0  # failed operations during the current (or last) outage
        self.outages = 0  # outages seen since start

    @property
    def up(self) -> bool:
        return self._down_since is None

    def failed(self, where: str, exc: BaseException) -> None:
        """An operation in ``where`` could not reach Redis."""
        if self._down_since is None:
            self._down_since = self._clock()
            self.failures = 0
            self.outages += 1
            log.warning(
                "Redis unreachable (%s in %s: %s); carrying on and retrying",
                type(exc).__name__,
                where,
                exc,
            )
        self.failures += 1

    def succeeded(self) -> None:
        """An operation reached Redis."""
        if self._down_since is not None:
            away = self._clock() - self._down_since
            self._down_since = None
            log.warning(
                "Redis reachable again after %.1f s (%d operations failed meanwhile)",
                away,
                self.failures,
            )
