"""HTTP clients of the hub towards others (the citizens' gateway webhook, the phones' push
services): one TLS context for all of them.

httpx builds a new TLS context for every client, loading certifi's certificate authorities
again each time (about 30 ms). The hub makes its clients at start, so this cost is paid at
every start of a hub (and of every app in the tests); :func:`tls_context` pays it once per
process. The context is httpx's own default (certifi's authorities, ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` honoured), read on first use.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, made once per process and shared by its clients."""
    return httpx.create_ssl_context()
