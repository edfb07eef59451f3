"""HTTP calls to one or several servers: least-loaded choice, retries with backoff, timeouts, usage.

Used by the clients of remote models (:class:`~pe_lightning.apis.RemoteImageAPI`,
:class:`~pe_lightning.apis.HostedImageAPI`). The HTTP client is urllib3 (a connection pool per
server; it reads a 1 MB answer on loopback several times faster than httpx or requests did
here); urllib3 and tenacity are imported when a pool is built, so importing
:mod:`pe_lightning.apis` stays fast.

Failure handling of one request (:meth:`ServerPool.request`):

* a connection error, a timeout, HTTP 5xx or HTTP 429 is *retryable*: the server is set
  aside for ``cooldown_s`` (429: for its ``Retry-After``) and the request goes again, to
  another server when there is one, after an exponential backoff (or the ``Retry-After``);
* any other HTTP 4xx is the caller's error: raised at once, with the server's detail;
* after ``retries`` retries, :class:`RemoteAPIError` names the request and every attempt.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence, TypeVar

__all__ = ["RemoteAPIError", "ServerPool", "UsageMeter", "check_urls"]

T = TypeVar("T")
R = TypeVar("R")


class RemoteAPIError(RuntimeError):
    """A remote API request failed; the message names the request and the server(s)."""


class _Retryable(Exception):
    def __init__(self, url: str, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason, self.retry_after = url, reason, retry_after


def check_urls(urls: Sequence[str], *, field_name: str = "urls") -> list[str]:
    """``urls`` without trailing slashes.

    Raises:
        ValueError: naming ``field_name``: not a non-empty list of ``http(s)://host:port`` strings, or a duplicate.
    """
    if isinstance(urls, str) or not isinstance(urls, (list, tuple)) or not urls:
        raise ValueError(f"{field_name} must be a non-empty list of server URLs such as ['http://127.0.0.1:8000'], got {urls!r}")
    out = []
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
            raise ValueError(f"{field_name} entries must be http:// or https:// URLs, got {url!r}")
        out.append(url.rstrip("/"))
    if len(set(out)) != len(out):
        raise ValueError(f"{field_name} lists a server twice: {urls!r}")
    return out


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date); ``None`` if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass
class HTTPResponse:
    """An answer: status, body bytes, headers (case-insensitive)."""

    status_code: int
    content: bytes
    headers: Any

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        return json.loads(self.content)


@dataclass
class UsageMeter:
    """Thread-safe usage counters: per iteration (reset by :meth:`take`) and over the process.

    Attributes:
        images: images received this iteration (from servers or the response cache).
        images_requested: images asked of servers this iteration, retries included (the cost).
        requests: HTTP requests sent this iteration (retries included).
        retries: requests sent again after a retryable failure.
        cached_images: images read from the response cache instead of being requested.
        seconds: wall time spent in API calls this iteration.
        total_images_requested, total_requests: the same over the whole process (the cost counter).
    """

    images: int = 0
    images_requested: int = 0
    requests: int = 0
    retries: int = 0
    cached_images: int = 0
    seconds: float = 0.0
    total_images_requested: int = 0
    total_requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: float) -> None:
        """Add to the named counters (``images_requested`` and ``requests`` also to the totals)."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
            self.total_images_requested += int(counts.get("images_requested", 0))
            self.total_requests += int(counts.get("requests", 0))

    def take(self) -> dict[str, float]:
        """This iteration's ``api/*`` metrics, then reset them (the totals keep counting)."""
        with self._lock:
            out = {
                "api/images": float(self.images),
                "api/requests": float(self.requests),
                "api/requests_s": float(self.seconds),
                "api/images_per_s": float(self.images / self.seconds) if self.seconds > 0 else 0.0,
                "api/retries": float(self.retries),
                "api/cached_images": float(self.cached_images),
                "api/images_requested_total": float(self.total_images_requested),  # the cost counter
            }
            self.images = self.images_requested = self.requests = self.retries = self.cached_images = 0
            self.seconds = 0.0
            return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class ServerPool:
    """Sends requests to the least-loaded of several servers, with retries, backoff and timeouts.

    Args:
        urls: server base URLs.
        timeout_s: seconds to wait for a response (read/write) before the attempt fails.
        connect_timeout_s: seconds to wait for a connection.
        retries: attempts after the first (each on the least-loaded server not set aside).
        backoff_s: first wait before a retry; doubles each retry, at most ``max_backoff_s``.
        max_backoff_s: longest wait between attempts, and the longest ``Retry-After`` honoured.
        cooldown_s: seconds a server that failed is avoided (while another is available).
        max_concurrency: requests in flight at once (threads of :meth:`map`).
        headers: sent with every request (e.g. an ``Authorization`` header; never logged).
        meter: where requests, retries and images requested are counted.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        cooldown_s: float = 10.0,
        max_concurrency: int = 4,
        headers: dict[str, str] | None = None,
        meter: UsageMeter | None = None,
    ) -> None:
        import urllib3

        self.urls = check_urls(urls)
        self.timeout_s, self.retries = timeout_s, retries
        self.backoff_s, self.max_backoff_s, self.cooldown_s = backoff_s, max_backoff_s, cooldown_s
        self.meter = meter if meter is not None else UsageMeter()
        self.max_concurrency = max_concurrency
        self.headers = dict(headers or {})
        self._timeout = urllib3.Timeout(connect=connect_timeout_s, read=timeout_s)
        self._client = urllib3.PoolManager(maxsize=max(max_concurrency, 1), block=False, retries=False)
        self._lock = threading.Lock()
        self._in_flight = {u: 0 for u in self.urls}
        self._avoid_until = {u: 0.0 for u in self.urls}
        self._turn = itertools.count()
        self._executor: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Close the connections and the worker threads."""
        self._client.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # ------------------------------------------------------------ choosing a server
    def _acquire(self, tried: set[str], only: str | None = None) -> str:
        """The least-loaded usable server (not set aside, not tried yet when possible); ties in turn."""
        with self._lock:
            if only is not None:
                self._in_flight[only] += 1
                return only
            now = time.monotonic()
            start = next(self._turn) % len(self.urls)
            order = self.urls[start:] + self.urls[:start]
            for candidates in (
                [u for u in order if u not in tried and self._avoid_until[u] <= now],
                [u for u in order if self._avoid_until[u] <= now],
                [u for u in order if u not in tried],
                order,
            ):
                if candidates:
                    url = min(candidates, key=lambda u: self._in_flight[u])
                    self._in_flight[url] += 1
                    return url
        raise AssertionError("unreachable: the pool has servers")

    def _release(self, url: str, *, failed: bool = False, avoid_s: float | None = None) -> None:
        with self._lock:
            self._in_flight[url] -= 1
            if failed:
                self._avoid_until[url] = time.monotonic() + (self.cooldown_s if avoid_s is None else avoid_s)

    # ------------------------------------------------------------ one request
    def _attempt(self, method: str, path: str, *, what: str, tried: set[str], images: int, only: str | None, kwargs: dict):
        from urllib3.exceptions import HTTPError, TimeoutError

        url = self._acquire(tried, only)
        tried.add(url)
        self.meter.add(requests=1, images_requested=images)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            raw = self._client.request(method, url + path, headers=headers, timeout=self._timeout, redirect=False, **kwargs)
            response = HTTPResponse(raw.status, raw.data, raw.headers)
        except TimeoutError as err:
            self._release(url, failed=True)
            raise _Retryable(url, f"no response within the timeout ({type(err).__name__}, timeout_s={self.timeout_s:g})") from None
        except (HTTPError, OSError) as err:
            self._release(url, failed=True)
            raise _Retryable(url, f"connection failed ({type(err).__name__}: {err})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("Retry-After")) if status in (429, 503) else None
            self._release(url, failed=True, avoid_s=wait)
            kind = "rate limited (HTTP 429)" if status == 429 else f"HTTP {status}"
            raise _Retryable(url, f"{kind}: {_detail(response)}", retry_after=wait)
        self._release(url)
        if status >= 400:
            raise RemoteAPIError(f"{url} refused {what}: HTTP {status}: {_detail(response)}")
        return url, response

    def request(self, method: str, path: str, *, what: str, images: int = 0, server: str | None = None, **kwargs: Any):
        """Send one request, retrying on another server; ``(url, HTTPResponse)``.

        ``kwargs`` go to ``urllib3.PoolManager.request``: ``body=`` bytes, ``json=``, or
        ``fields=`` (multipart), and ``headers=``.

        Args:
            method: ``"GET"`` or ``"POST"``.
            path: appended to the chosen server's URL (e.g. ``"/random"``).
            what: names the request in errors (e.g. ``"random request 3 (64 images, iteration 0)"``).
            images: images the request asks for (counted as ``images_requested`` per attempt).
            server: send to this one of :attr:`urls` only (e.g. to ask each server for its metadata).

        Raises:
            RemoteAPIError: a 4xx answer, or every attempt failed (each attempt named).
        """
        from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        if server is not None and server not in self._in_flight:
            raise ValueError(f"server {server!r} is not one of the pool's urls {self.urls}")
        tried: set[str] = set()
        failures: list[str] = []
        backoff = wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)

        def wait(state) -> float:
            after = getattr(state.outcome.exception(), "retry_after", None)
            return min(after, self.max_backoff_s) if after is not None else backoff(state)

        def before_sleep(state) -> None:
            self.meter.add(retries=1)
            if len(tried) >= len(self.urls):
                tried.clear()  # every server was tried: start over with the least loaded

        retrying = Retrying(stop=stop_after_attempt(self.retries + 1), wait=wait, before_sleep=before_sleep,
                            retry=retry_if_exception_type(_Retryable), reraise=False)
        def attempt():
            try:
                return self._attempt(method, path, what=what, tried=tried, images=images, only=server, kwargs=dict(kwargs))
            except _Retryable as err:
                failures.append(str(err))
                raise

        try:
            return retrying(attempt)
        except RetryError:
            raise RemoteAPIError(
                f"{what} failed after {len(failures)} attempt(s): " + "; ".join(failures)
            ) from None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(item) for item in items]`` with up to ``max_concurrency`` running at once (order kept)."""
        items = list(items)
        if len(items) <= 1 or self.max_concurrency == 1:
            return [fn(item) for item in items]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="pe-api")
        return list(self._executor.map(fn, items))


def _detail(response: HTTPResponse) -> str:
    """The error detail of a response (FastAPI's ``{"detail": ...}`` or an OpenAI-style error), shortened."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or "").strip()[:300] or "(empty body)"
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body))
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        return str(detail)[:300]
    return str(body)[:300]
