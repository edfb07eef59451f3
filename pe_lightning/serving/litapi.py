"""An :class:`~pe_lightning.apis.ImageAPI` as a LitServe ``LitAPI``, and its HTTP endpoints.

:class:`ImageLitAPI` runs in LitServe's inference workers (``workers_per_device`` per device,
each with its own copy of the model): it decodes a request (:mod:`.protocol`), rebuilds the
caller's generator, calls the API and encodes the images. :class:`ImageAPISpec` adds the
endpoints to LitServe's HTTP server: ``POST /random``, ``POST /variation`` (npz bodies),
``GET /metadata`` (JSON); LitServe itself serves ``GET /health``.

litserve is imported here only; :mod:`pe_lightning.serving.server` imports this module
when a server starts.
"""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import litserve as ls
import numpy as np
import torch
from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem

from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.atomic import atomic_write
from pe_lightning.serving.protocol import MEDIA_TYPE, ProtocolError, Request as APIRequest
from pe_lightning.serving.protocol import decode_request, encode_response

__all__ = ["ImageAPISpec", "ImageLitAPI"]

#: LitServe's queue key for the one LitAPI (no route of its own: the spec's endpoints use it).
QUEUE_PATH = "/pe"


def generator_for(request: APIRequest) -> torch.Generator:
    """The CPU generator a request names: the caller's exact state, or a fresh one from its seed.

    Raises:
        ProtocolError: a generator state of the wrong size or layout.
    """
    generator = torch.Generator()
    if request.seed is not None:
        generator.manual_seed(int(request.seed) & ((1 << 63) - 1))
        return generator
    try:
        generator.set_state(torch.from_numpy(np.ascontiguousarray(request.generator_state)))
    except RuntimeError as err:
        raise ProtocolError(f"request field 'generator_state' is not a CPU torch.Generator state: {err}") from None
    return generator


def call_api(api: ImageAPI, request: APIRequest) -> APIOutput:
    """Run one request on ``api`` (``set_iteration`` first, then RANDOM or VARIATION)."""
    generator = generator_for(request)
    api.set_iteration(request.iteration)
    if request.call == "random":
        return api.random(labels=request.labels, generator=generator)
    return api.variation(images=request.images, conditions=request.conditions, labels=request.labels,
                         degree=request.degree, generator=generator)


class ImageLitAPI(ls.LitAPI):
    """LitServe worker side of a served :class:`~pe_lightning.apis.ImageAPI`.

    Args:
        api: the API to serve (its ``setup`` runs in each worker, on the worker's device).
        class_names: the class names given to ``api.setup`` (public labels).
        max_batch_size: LitServe's dynamic batching: up to this many queued requests reach
            :meth:`predict` together; each still runs as its own API call with its own
            generator (the calls' random streams never mix).
        batch_timeout: seconds LitServe waits to fill a batch.
    """

    def __init__(self, *, api: ImageAPI, class_names: Sequence[str] | None, max_batch_size: int = 1,
                 batch_timeout: float = 0.0, spec: LitSpec | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=QUEUE_PATH, spec=spec)
        self.api = api
        self.class_names = list(class_names) if class_names is not None else None

    def setup(self, device: str) -> None:  # noqa: D102 - LitServe hook
        self.api.setup(device=device, class_names=self.class_names)

    def decode_request(self, request: tuple[str, bytes]) -> APIRequest | HTTPException:  # noqa: D102
        call, body = request
        try:
            return decode_request(call, body)
        except ProtocolError as err:
            if self.max_batch_size > 1:  # one bad request must not fail the others of its batch
                return HTTPException(400, detail=str(err))
            raise HTTPException(400, detail=str(err)) from None

    def predict(self, x: Any) -> Any:  # noqa: D102 - LitServe hook
        if self.max_batch_size > 1:  # LitServe's default batch() hands over the list: requests are never merged
            return [self._run(request) for request in x]
        result = self._run(x)
        if isinstance(result, HTTPException):
            raise result
        return result

    def _run(self, request: APIRequest | HTTPException) -> APIOutput | HTTPException:
        if isinstance(request, HTTPException):
            return request
        try:
            return call_api(self.api, request)
        except (ValueError, TypeError) as err:  # the API refused the inputs: the caller's error, not the server's
            return HTTPException(400, detail=f"{type(self.api).__name__}.{request.call}: {err}")

    def encode_response(self, output: APIOutput | HTTPException) -> bytes:  # noqa: D102 - LitServe hook
        if isinstance(output, HTTPException):
            raise output
        return encode_response(output.images, output.conditions)


def _error_of(response: Any) -> HTTPException:
    """The HTTP error a worker reported (LitServe pickles ``HTTPException``s)."""
    if isinstance(response, bytes):
        try:
            response = pickle.loads(response)  # noqa: S301 - from our own worker process
        except Exception:  # noqa: BLE001 - not a pickled exception
            pass
    status, detail = getattr(response, "status_code", None), getattr(response, "detail", None)
    if isinstance(status, int):
        return HTTPException(status, detail=detail)
    return HTTPException(500, detail=f"the served API failed: {type(response).__name__}: {response}")


class ImageAPISpec(LitSpec):
    """The HTTP endpoints of a served ImageAPI (a LitServe spec: it registers its own routes).

    Args:
        metadata: what ``GET /metadata`` answers.
        record_dir: when set, every request body received is written there
            (``<time_ns>-<id>.<call>.npz``, temp-then-rename) before it is run: an audit of
            everything the model side was sent.
    """

    def __init__(self, *, metadata: dict[str, Any], record_dir: str | None = None) -> None:
        super().__init__()
        self.api_path = QUEUE_PATH
        self.metadata = dict(metadata)
        self.record_dir = record_dir
        self.add_endpoint("/random", self.random_endpoint, ["POST"])
        self.add_endpoint("/variation", self.variation_endpoint, ["POST"])
        self.add_endpoint("/metadata", self.metadata_endpoint, ["GET"])

    def decode_request(self, request, context_kwargs=None):  # noqa: D102 - the LitAPI decodes
        return request

    def encode_response(self, output, context_kwargs=None):  # noqa: D102 - the LitAPI encodes
        return output

    async def metadata_endpoint(self) -> JSONResponse:
        """``GET /metadata``."""
        return JSONResponse(self.metadata)

    async def random_endpoint(self, request: Request) -> Response:
        """``POST /random``."""
        return await self.handle("random", await request.body())

    async def variation_endpoint(self, request: Request) -> Response:
        """``POST /variation``."""
        return await self.handle("variation", await request.body())

    def _record(self, call: str, body: bytes) -> None:
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.{call}.npz"
        atomic_write(Path(self.record_dir) / name, lambda tmp: Path(tmp).write_bytes(body))

    async def handle(self, call: str, body: bytes) -> Response:
        """Queue ``call`` with ``body`` for an inference worker and answer its npz bytes."""
        if self.record_dir:
            self._record(call, body)
        uid = uuid.uuid4()
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event)
        self.request_queue.put_nowait((self.response_queue_id, uid, time.monotonic(), (call, body)))
        await event.wait()
        response, status = self.response_buffer.pop(uid).response
        if status == LitAPIStatus.ERROR:
            raise _error_of(response)
        return Response(content=response, media_type=MEDIA_TYPE)
