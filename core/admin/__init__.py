"""The admin API of a running worker (``meshconnect run --admin HOST:PORT``): a REST API in
the shape of Kafka Connect's, ``/metrics``, ``/openapi.json`` and a dashboard page
(docs/operations.md). aiohttp is the ``http`` extra; ``meshconnect status`` needs ``rich``
(the ``admin`` extra)."""

from .control import Controller, pipeline_state
from .server import DEFAULT_LISTEN, AdminServer, is_loopback, token_file

__all__ = [
    "DEFAULT_LISTEN",
    "AdminServer",
    "Controller",
    "is_loopback",
    "pipeline_state",
    "token_file",
]
