"""``tidings web``: the cluster live in a browser, with Flower 2.2's REST API.

* :mod:`.monitor` — :class:`WebMonitor`: events in a thread, HTTP in another;
* :mod:`.app` — the ASGI application (pages, API, live stream, metrics);
* :mod:`.api` — the REST API at Flower's paths, and its OpenAPI document;
* :mod:`.tasks` — listing, filtering, sorting and paging tasks (pure);
* :mod:`.search` — the search language (pure);
* :mod:`.views` / :mod:`.pages` — what each page shows, and its HTML;
* :mod:`.live` — coalesced live pushes (Server-Sent Events);
* :mod:`.inspector` — the workers' inspect answers, cached;
* :mod:`.security` — authentication, CSRF, read-only, security headers.
"""

from .monitor import DEFAULT_ADDRESS, DEFAULT_PORT, WebMonitor, WebOptions
from .search import QuerySyntaxError, compile_query
from .security import Access, parse_users

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_PORT",
    "Access",
    "QuerySyntaxError",
    "WebMonitor",
    "WebOptions",
    "compile_query",
    "parse_users",
]
