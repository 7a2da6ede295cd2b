"""The HTTP client a merchant's webhooks go through: only to allowed addresses, nothing from the environment.

Each connection resolves the URL's host itself, judges every address (``events.addresses``) and connects to
the first allowed one that answers, by address: what was checked is what is reached, however the DNS answer
changes in between. TLS still verifies (and sends SNI for) the URL's host name, and the Host header is the
URL's, because httpcore takes those from the request, not from the network backend.

httpx's ``AsyncHTTPTransport`` builds its httpcore pool itself and takes no network backend, so
``GuardedTransport`` is that transport over a pool built here: the same request and error mapping, on
public httpx and httpcore interfaces only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import httpcore
import httpx

from events import addresses
from events.addresses import IPAddress, Resolver, WebhookAddressRefused

KEEPALIVE = 5.0  # seconds an idle connection is kept (httpx's default, explicit: events.lanes relies on it)

# httpcore's errors as httpx's, the most specific first (what httpx's own transport does).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)
_CORE_ERRORS = tuple(core for core, _ in _ERRORS)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses ``events.addresses`` allows, by address, after resolving the name once."""

    def __init__(
        self, allow_private: bool, resolve: Resolver = addresses.resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:  # fmt: skip
        self._allow_private = allow_private
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(  # httpcore's signature, timeout and all
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        failure: Exception | None = None
        for address in await self._allowed(host, port, timeout):
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # the next address may answer (a dual-stack host whose IPv6 route is broken)
        assert failure is not None  # _allowed never returns an empty list
        raise failure

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _allowed(self, host: str, port: int, within: float | None) -> list[IPAddress]:
        try:
            async with asyncio.timeout(within):
                found = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no DNS answer within {within} s") from None
        except OSError as exc:  # socket.gaierror: the name does not resolve (now)
            raise httpcore.ConnectError(str(exc)) from exc
        allowed, refused = addresses.screen(found, self._allow_private)
        if not allowed:
            raise WebhookAddressRefused(refused)
        return allowed


class GuardedTransport(httpx.AsyncBaseTransport):
    """httpx's transport over an httpcore pool whose connections all go through a ``GuardedBackend``."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            response = await self._pool.handle_async_request(core)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            response.status, headers=response.headers, stream=_Body(response.stream), extensions=response.extensions
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _mapped():
                await close()


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except _CORE_ERRORS as exc:
        mapped = next(ours for core, ours in _ERRORS if isinstance(exc, core))
        raise mapped(str(exc)) from exc


def open_client(
    allow_private: bool, connections: int, timeout: float, tls: ssl.SSLContext, resolve: Resolver = addresses.resolve
) -> httpx.AsyncClient:
    """A client of at most ``connections`` connections, each to an allowed address only.

    ``trust_env=False``: HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY and .netrc are never read, so nothing in
    the process's environment can route a webhook through somewhere else. Redirects are not followed (httpx's
    default, stated here so that it stays): a 3xx is a failed attempt, never a hop to an address unchecked.
    """
    pool = httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=KEEPALIVE,
        network_backend=GuardedBackend(allow_private, resolve),
    )
    transport = GuardedTransport(pool)
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False, follow_redirects=False)


def tls_context() -> ssl.SSLContext:
    """One context for every merchant's client (building one loads the CA bundle: milliseconds each)."""
    return httpx.create_ssl_context(trust_env=False)
