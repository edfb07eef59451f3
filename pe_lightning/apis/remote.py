""":class:`RemoteImageAPI`: an ImageAPI served by ``python -m pe_lightning serve`` on one or more machines.

It is used wherever an ImageAPI is (``model.init_args.api`` in a config). Each call goes to
the servers as npz requests (:mod:`pe_lightning.serving.protocol`); the answer is checked
(shape, dtype, count) before PE sees it.

Reproducibility: a call whose ``N`` fits one request (``request_size`` unset, the default, or
``>= N``) sends the *state* of the generator PE passed, and the server continues exactly that
random stream: a run against servers gives the population of the same run in process
(same seed, seeded noise), on any number of servers, whichever server answers. With a
smaller ``request_size`` the call is split into requests sent concurrently, each seeded from
one number drawn from PE's generator and the request's index: reproducible and independent
of the number of servers, but a different stream from the in-process API.

Privacy: only what PE sends any API leaves the process: public labels, synthetic images and
their conditions (docs/serving.md). Private images never do.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.apis.http_pool import RemoteAPIError, ServerPool, UsageMeter, check_urls
from pe_lightning.apis.response_cache import ResponseCache, request_key
from pe_lightning.validation import check_positive

__all__ = ["RemoteAPIError", "RemoteImageAPI"]


def split_seed(base: int, index: int) -> int:
    """The 63-bit seed of request ``index`` of a split call whose base seed is ``base``."""
    digest = hashlib.sha256(f"{int(base)}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class RemoteImageAPI(ImageAPI):
    """RANDOM and VARIATION of a model served over HTTP (``python -m pe_lightning serve``).

    Requests go to the least-loaded server (in-flight requests; ties in turn); a connection
    error, a timeout or a 5xx sends the request again, to another server when there is one,
    after an exponential backoff; a server that failed is avoided for ``cooldown_s``. A
    malformed answer (not npz, wrong dtype, shape or count) or a 4xx is an error at once,
    naming the server and the request.

    Metrics per PE iteration (:meth:`take_metrics`, logged by the run): ``api/images`` (images
    received), ``api/requests`` (HTTP requests sent), ``api/requests_s`` (wall seconds spent in
    API calls), ``api/images_per_s``, ``api/retries``, ``api/cached_images`` (answers read from
    the response cache) and the cost counter ``api/images_requested_total`` (images asked of
    the servers by this process, retries included; also in the run summary). Counted on the
    process that calls (rank 0's calls in a multi-process run).

    Args:
        urls: the servers' base URLs, e.g. ``["http://127.0.0.1:8000", "http://127.0.0.1:8001"]``;
            all must serve the same config (same ``/metadata`` fingerprint).
        request_size: most samples per request; a larger call is split into concurrent
            requests (see the module docstring: a different random stream). ``None``: one
            request per call (PE's ``api_batch_size`` chunks), identical to in process.
        max_concurrency: requests in flight at once (default: 2 per server).
        timeout_s: seconds to wait for one response before trying again elsewhere.
        connect_timeout_s: seconds to wait for a connection.
        retries: attempts after the first, per request.
        backoff_s: first wait before a retry (doubles each retry, at most 30 s).
        cooldown_s: seconds a failed server is avoided while another one is available.
        response_cache: folder where answers are kept so that a resumed run re-issues none it
            already received (synthetic images only; the CLI puts it under the output root
            as ``api_responses``). ``None``: no cache.
        image_size: the expected image side (checked against the servers; also tells the
            planner the image size before any server is asked).
        expect_api: the expected served class path (e.g. ``"pe_lightning.apis.DrawText"``; the
            served module path may be longer: a suffix match on the class name and package).
        expect_fingerprint: the expected config fingerprint (``GET /metadata``).
    """

    def __init__(
        self,
        *,
        urls: list[str],
        request_size: int | None = None,
        max_concurrency: int | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        cooldown_s: float = 10.0,
        response_cache: str | None = None,
        image_size: int | None = None,
        expect_api: str | None = None,
        expect_fingerprint: str | None = None,
    ) -> None:
        self.urls = check_urls(urls)
        if request_size is not None:
            check_positive("request_size", request_size, integer=True)
        if max_concurrency is not None:
            check_positive("max_concurrency", max_concurrency, integer=True)
        for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s), ("cooldown_s", cooldown_s)):
            check_positive(name, value)
        check_positive("retries", retries, integer=True, zero=True)
        check_positive("backoff_s", backoff_s, zero=True)
        if image_size is not None:
            check_positive("image_size", image_size, integer=True)
        self.request_size = request_size
        self.max_concurrency = max_concurrency or 2 * len(self.urls)
        self.timeout_s, self.connect_timeout_s = float(timeout_s), float(connect_timeout_s)
        self.retries, self.backoff_s, self.cooldown_s = int(retries), float(backoff_s), float(cooldown_s)
        self.response_cache = response_cache
        self.image_size = image_size
        self.expect_api, self.expect_fingerprint = expect_api, expect_fingerprint
        self.iteration = 0
        self.meter = UsageMeter()
        self.metadata: dict[str, Any] | None = None
        self.class_names: list[str] | None = None
        self._pool: ServerPool | None = None
        self._cache: ResponseCache | None = None

    # ------------------------------------------------------------------ set-up
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pool"] = None  # connections and threads stay with the process that opened them
        return state

    @property
    def pool(self) -> ServerPool:
        """The connections to the servers (opened on first use)."""
        if self._pool is None:
            self._pool = ServerPool(self.urls, timeout_s=self.timeout_s, connect_timeout_s=self.connect_timeout_s,
                                    retries=self.retries, backoff_s=self.backoff_s, cooldown_s=self.cooldown_s,
                                    max_concurrency=self.max_concurrency, meter=self.meter)
        return self._pool

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Ask every server for its metadata and check they serve the expected model.

        Args:
            device: unused (the model runs on the servers).
            class_names: the run's class names; they must equal the servers' (when the servers state theirs).

        Raises:
            RemoteAPIError: no server answers, or two servers serve different configs.
            ValueError: a server's model is not the expected one (class, fingerprint, image
                size, class names), or it speaks another protocol version.
        """
        if class_names is not None:
            self.class_names = [str(c) for c in class_names]
        self.metadata = self._fetch_metadata()
        if self.response_cache is not None:
            self._cache = ResponseCache(self.response_cache)

    def _fetch_metadata(self) -> dict[str, Any]:
        from pe_lightning.serving.protocol import PROTOCOL_VERSION

        answers: dict[str, dict] = {}
        failures: list[str] = []
        for url in self.urls:
            try:
                _, response = self.pool.request("GET", "/metadata", what=f"GET {url}/metadata", server=url)
                answers[url] = response.json()
            except (RemoteAPIError, ValueError) as err:
                failures.append(f"{url}: {err}")
        if not answers:
            raise RemoteAPIError("RemoteImageAPI: no server answered GET /metadata: " + "; ".join(failures))
        (first_url, first), *others = answers.items()
        for url, meta in others:
            if meta.get("fingerprint") != first.get("fingerprint"):
                raise RemoteAPIError(
                    f"RemoteImageAPI: {first_url} serves config {first.get('fingerprint')} ({first.get('api')}) but "
                    f"{url} serves {meta.get('fingerprint')} ({meta.get('api')}); every server in urls must serve the same config"
                )
        if first.get("protocol") != PROTOCOL_VERSION:
            raise ValueError(f"{first_url} speaks protocol {first.get('protocol')}, this client {PROTOCOL_VERSION}")
        api = str(first.get("api"))
        if self.expect_api is not None and not _same_class(api, self.expect_api):
            raise ValueError(f"expect_api={self.expect_api!r} but {first_url} serves {api!r}")
        if self.expect_fingerprint is not None and first.get("fingerprint") != self.expect_fingerprint:
            raise ValueError(f"expect_fingerprint={self.expect_fingerprint!r} but {first_url} serves {first.get('fingerprint')!r}")
        shape = tuple(int(s) for s in first.get("image_shape") or ())
        if len(shape) != 3:
            raise ValueError(f"{first_url}/metadata has no valid image_shape: {first.get('image_shape')!r}")
        if self.image_size is not None and shape[:2] != (self.image_size, self.image_size):
            raise ValueError(f"image_size={self.image_size} but {first_url} serves images of shape {shape}")
        served = first.get("class_names")
        if served is not None and self.class_names is not None and list(served) != self.class_names:
            raise ValueError(
                f"the run's class names {self.class_names} differ from those {first_url} serves {list(served)}: "
                "start the server with the run's class_names (in label order)"
            )
        if failures:
            import warnings

            warnings.warn("RemoteImageAPI: some servers did not answer GET /metadata (they will be retried): "
                          + "; ".join(failures), stacklevel=3)
        return dict(first, image_shape=list(shape))

    @property
    def image_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        """``(H, W, C)`` the servers produce (asks them when not set up yet)."""
        if self.metadata is None:
            self.metadata = self._fetch_metadata()
        return tuple(self.metadata["image_shape"])  # type: ignore[return-value]

    def set_iteration(self, iteration: int) -> None:
        """Remember the iteration (sent with each request) and prune the response cache."""
        super().set_iteration(iteration)
        if self._cache is not None:
            self._cache.start_iteration(self.iteration)

    def validate_degree(self, degree: float) -> None:
        """A finite degree ``>= 0``, at most the served API's ``max_degree`` once known (the server checks too)."""
        super().validate_degree(degree)
        top = (self.metadata or {}).get("max_degree")
        if top is not None and float(degree) > float(top):
            raise ValueError(f"variation degree must be at most {top} for the served {self.metadata.get('api')}, got {degree!r}")

    def take_metrics(self) -> dict[str, float]:
        """This iteration's ``api/*`` metrics (then reset); see the class docstring."""
        return self.meter.take()

    # ------------------------------------------------------------------ calls
    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM: ``len(labels)`` fresh samples from the servers (see the class docstring)."""
        return self._call("random", labels=labels, generator=generator)

    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """VARIATION: one variation of each input, from the servers (see the class docstring)."""
        n = images.shape[0]
        for key, value in conditions.items():
            if not isinstance(value, np.ndarray) or value.shape[:1] != (n,):
                raise ValueError(f"conditions[{key!r}] must be an array with first dimension {n}, got {getattr(value, 'shape', None)}")
        return self._call("variation", labels=labels, generator=generator, images=images, conditions=conditions,
                          degree=degree)

    def _streams(self, n: int, generator: torch.Generator) -> list[tuple[slice, dict[str, np.ndarray]]]:
        """Each request's rows and random stream (``generator_state`` or ``seed``)."""
        size = self.request_size
        if size is None or n <= size:
            if generator.device.type == "cpu":
                return [(slice(0, n), {"generator_state": generator.get_state().numpy().copy()})]
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            return [(slice(0, n), {"seed": np.asarray(seed, dtype=np.int64)})]
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        return [(slice(start, min(start + size, n)), {"seed": np.asarray(split_seed(base, j), dtype=np.int64)})
                for j, start in enumerate(range(0, n, size))]

    def _call(self, call: str, *, labels: np.ndarray, generator: torch.Generator, images: np.ndarray | None = None,
              conditions: dict[str, np.ndarray] | None = None, degree: float | None = None) -> APIOutput:
        import time

        from pe_lightning.serving.protocol import Request

        if self.metadata is None:
            self.metadata = self._fetch_metadata()
        start = time.perf_counter()
        parts = []
        for rows, stream in self._streams(len(labels), generator):
            parts.append(Request(
                call=call, labels=labels[rows], iteration=self.iteration,
                seed=int(stream["seed"]) if "seed" in stream else None, generator_state=stream.get("generator_state"),
                images=None if images is None else np.ascontiguousarray(images[rows]),
                conditions={k: v[rows] for k, v in (conditions or {}).items()}, degree=degree,
            ))
        outputs = self.pool.map(lambda ir: self._send(ir[1], index=ir[0], of=len(parts)), list(enumerate(parts)))
        self.meter.add(seconds=time.perf_counter() - start)
        if len(outputs) == 1:
            return outputs[0]
        keys = set(outputs[0].conditions)
        if any(set(o.conditions) != keys for o in outputs):
            raise RemoteAPIError(f"RemoteImageAPI: the servers returned different condition keys for the parts of one {call} call")
        return APIOutput(images=np.concatenate([o.images for o in outputs]),
                         conditions={k: np.concatenate([o.conditions[k] for o in outputs]) for k in keys})

    def _send(self, request, *, index: int, of: int) -> APIOutput:
        from pe_lightning.serving.protocol import ProtocolError, decode_response, encode_request

        n = len(request)
        what = (f"{request.call} request {index + 1}/{of} ({n} images, iteration {request.iteration}"
                + (f", degree {request.degree:g}" if request.degree is not None else "") + ")")
        key = None
        if self._cache is not None:
            key = request_key(call=request.call, fingerprint=str(self.metadata.get("fingerprint")), iteration=request.iteration,
                              arrays={"labels": request.labels, "images": request.images, "seed": _seed_array(request),
                                      "generator_state": request.generator_state,
                                      **{f"condition/{k}": v for k, v in request.conditions.items()}},
                              extra=repr(request.degree))
            body = self._cache.get(request.iteration, key)
            if body is not None:
                images, conditions = decode_response(body, n=n, image_shape=self.image_shape)
                self.meter.add(images=n, cached_images=n)
                return APIOutput(images=images, conditions=conditions)
        url, response = self.pool.request("POST", f"/{request.call}", what=f"RemoteImageAPI {what}", images=n,
                                          body=encode_request(request), headers={"Content-Type": "application/x-npz"})
        try:
            images, conditions = decode_response(response.content, n=n, image_shape=self.image_shape)
        except ProtocolError as err:
            raise RemoteAPIError(f"{url} answered RemoteImageAPI {what} with a malformed response: {err}") from None
        if self._cache is not None:
            self._cache.put(request.iteration, key, response.content)
        self.meter.add(images=n)
        return APIOutput(images=images, conditions=conditions)


def _seed_array(request) -> np.ndarray | None:
    return None if request.seed is None else np.asarray(request.seed, dtype=np.int64)


def _same_class(served: str, expected: str) -> bool:
    """``pe_lightning.apis.drawtext.api.DrawText`` matches ``pe_lightning.apis.DrawText`` (same package and class name)."""
    if served == expected:
        return True
    s_parts, e_parts = served.split("."), expected.split(".")
    return s_parts[-1] == e_parts[-1] and served.startswith(".".join(e_parts[:-1]) + ".")
