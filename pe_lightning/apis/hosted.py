""":class:`HostedImageAPI`: a hosted, OpenAI-compatible images API as PE's RANDOM and VARIATION.

* RANDOM: ``POST {base_url}/images/generations`` (JSON: ``model``, ``prompt``, ``n``, ``size``,
  ``response_format="b64_json"``), with the prompt of each sample's class;
* VARIATION: ``POST {base_url}/images/variations`` (multipart: the input image as a PNG file,
  ``model``, ``n=1``, ``size``, ``response_format``), one request per input image.

The answer's ``data[i].b64_json`` PNGs are decoded and resized to ``image_size``. Rate limits:
HTTP 429 waits for the answer's ``Retry-After`` (at most 30 s) and tries again, like a
timeout or a 5xx (:mod:`pe_lightning.apis.http_pool`). Costs: every image asked for is
counted (``api/images_requested_total``, logged and in the run summary) and ``max_images``
stops a run before it asks for more.

What is sent: the class prompts (public) and, for VARIATION, synthetic images of the
population; never a private image (docs/serving.md). The API key is read from the
environment variable ``api_key_env`` and never logged or stored.

Reproducibility: hosted models take no seed, so the same request can answer different
images; ``response_cache`` (under the output root by default) keeps every answer, so a
resumed run re-issues (and pays for) nothing it already received.
"""

from __future__ import annotations

import base64
import io
import os
import time
from typing import Mapping, Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.apis.http_pool import RemoteAPIError, ServerPool, UsageMeter, check_urls
from pe_lightning.apis.response_cache import ResponseCache, request_key
from pe_lightning.validation import check_positive

__all__ = ["HostedImageAPI"]

_SIZES = ("256x256", "512x512", "1024x1024")


class HostedImageAPI(ImageAPI):
    """RANDOM and VARIATION from an OpenAI-compatible images API (generation and variation endpoints).

    Args:
        base_url: the API's base URL, e.g. ``"https://api.openai.com/v1"`` (or any compatible server).
        model: the model name sent with each request (e.g. ``"dall-e-2"``).
        prompts: the prompt of each class: a mapping class name -> prompt, or a list in label
            order. ``None``: ``prompt_template`` for every class.
        prompt_template: a prompt with ``{class_name}`` (used for classes ``prompts`` lacks).
        size: the image size asked of the API (``"256x256"``, ``"512x512"`` or ``"1024x1024"``).
        image_size: the side of the images PE receives (answers are resized to it, bicubic).
        channels: 3 (RGB) or 1 (gray).
        images_per_request: ``n`` of a generation request (1-10; variations ask 1 per input).
        api_key_env: the environment variable holding the API key (sent as a Bearer token).
        max_images: refuse to ask for more images than this in one process (the cost cap);
            ``None``: no cap.
        max_concurrency: requests in flight at once.
        timeout_s, retries, backoff_s: as in :class:`~pe_lightning.apis.RemoteImageAPI`.
        response_cache: folder keeping every answer (synthetic images) so that a resumed run
            asks for none again; the CLI puts it under the output root. ``None``: no cache.
    """

    #: OpenAI-style variation endpoints have no strength setting: any degree >= 0 is accepted and not sent.
    max_degree: float | None = None

    def __init__(
        self,
        *,
        base_url: str = "https://api.openai.com/v1",
        model: str = "dall-e-2",
        prompts: Mapping[str, str] | list[str] | None = None,
        prompt_template: str = "{class_name}",
        size: str = "256x256",
        image_size: int = 256,
        channels: int = 3,
        images_per_request: int = 1,
        api_key_env: str = "OPENAI_API_KEY",
        max_images: int | None = None,
        max_concurrency: int = 4,
        timeout_s: float = 120.0,
        retries: int = 6,
        backoff_s: float = 1.0,
        response_cache: str | None = None,
    ) -> None:
        self.base_url = check_urls([base_url], field_name="base_url")[0]
        if size not in _SIZES:
            raise ValueError(f"size must be one of {_SIZES}, got {size!r}")
        if "{class_name}" not in prompt_template:
            raise ValueError(f"prompt_template must contain '{{class_name}}', got {prompt_template!r}")
        if prompts is not None and not isinstance(prompts, (Mapping, list)):
            raise ValueError(f"prompts must be a mapping class name -> prompt or a list in label order, got {prompts!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        check_positive("image_size", image_size, integer=True)
        check_positive("images_per_request", images_per_request, integer=True)
        if images_per_request > 10:
            raise ValueError(f"images_per_request must be at most 10 (the API's n), got {images_per_request}")
        if max_images is not None:
            check_positive("max_images", max_images, integer=True, zero=True)
        check_positive("max_concurrency", max_concurrency, integer=True)
        check_positive("timeout_s", timeout_s)
        check_positive("retries", retries, integer=True, zero=True)
        check_positive("backoff_s", backoff_s, zero=True)
        self.model, self.prompts, self.prompt_template, self.size = model, prompts, prompt_template, size
        self.image_size, self.channels = int(image_size), int(channels)
        self.image_shape = (self.image_size, self.image_size, self.channels)
        self.images_per_request, self.api_key_env, self.max_images = int(images_per_request), api_key_env, max_images
        self.max_concurrency, self.timeout_s, self.retries, self.backoff_s = max_concurrency, timeout_s, retries, backoff_s
        self.response_cache = response_cache
        self.class_names: list[str] | None = None
        self.iteration = 0
        self.meter = UsageMeter()
        self._pool: ServerPool | None = None
        self._cache: ResponseCache | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    # ------------------------------------------------------------------ set-up
    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Record the class names (for the prompts) and check every class has one.

        Raises:
            ValueError: ``prompts`` is a list of another length than the classes, or names an unknown class.
        """
        if class_names is not None:
            self.class_names = [str(c) for c in class_names]
        names = self.class_names or []
        if isinstance(self.prompts, list) and self.class_names is not None and len(self.prompts) != len(names):
            raise ValueError(f"prompts has {len(self.prompts)} entries but there are {len(names)} classes {names}")
        if isinstance(self.prompts, Mapping) and self.class_names is not None:
            unknown = sorted(set(self.prompts) - set(names))
            if unknown:
                raise ValueError(f"prompts names classes {unknown} that are not among the class names {names}")
        if self.response_cache is not None:
            self._cache = ResponseCache(self.response_cache)

    @property
    def pool(self) -> ServerPool:
        """The connection to the API (opened on first use; the key is read from the environment then)."""
        if self._pool is None:
            key = os.environ.get(self.api_key_env, "")
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            self._pool = ServerPool([self.base_url], timeout_s=self.timeout_s, retries=self.retries, backoff_s=self.backoff_s,
                                    max_concurrency=self.max_concurrency, headers=headers, meter=self.meter)
        return self._pool

    def prompt(self, label: int) -> str:
        """The prompt of class ``label``."""
        name = self.class_names[label] if self.class_names is not None else str(label)
        if isinstance(self.prompts, list):
            return self.prompts[label]
        if isinstance(self.prompts, Mapping) and name in self.prompts:
            return self.prompts[name]
        return self.prompt_template.format(class_name=name)

    def set_iteration(self, iteration: int) -> None:
        """Remember the iteration and prune the response cache."""
        super().set_iteration(iteration)
        if self._cache is not None:
            self._cache.start_iteration(self.iteration)

    def take_metrics(self) -> dict[str, float]:
        """This iteration's ``api/*`` metrics (then reset); ``api/images_requested_total`` is the cost counter."""
        return self.meter.take()

    # ------------------------------------------------------------------ calls
    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM: generation requests of at most ``images_per_request`` images, each with its class's prompt."""
        jobs = []  # (positions, prompt, seed)
        for label in np.unique(labels):
            positions = np.flatnonzero(labels == label)
            for start in range(0, len(positions), self.images_per_request):
                jobs.append((positions[start:start + self.images_per_request], self.prompt(int(label))))
        seeds = torch.randint(0, 2**62, (len(jobs),), generator=generator).tolist()
        images = np.empty((len(labels), *self.image_shape), dtype=np.uint8)
        started = time.perf_counter()
        results = self.pool.map(lambda job: self._generate(*job[0], seed=job[1]), list(zip(jobs, seeds)))
        for (positions, _), result in zip(jobs, results):
            images[positions] = result
        self.meter.add(seconds=time.perf_counter() - started)
        return APIOutput(images=images, conditions={})

    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """VARIATION: one variation request per input image (``degree`` is validated, not sent: see the class)."""
        n = images.shape[0]
        seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
        started = time.perf_counter()
        results = self.pool.map(lambda i: self._vary(images[i], seed=seeds[i]), range(n))
        self.meter.add(seconds=time.perf_counter() - started)
        return APIOutput(images=np.stack(results) if results else np.empty((0, *self.image_shape), np.uint8), conditions={})

    # ------------------------------------------------------------------ requests
    def _fingerprint(self) -> str:
        return f"{self.base_url}|{self.model}|{self.size}|{self.image_shape}"

    def _cached(self, call: str, *, seed: int, extra: str, image: np.ndarray | None, n: int, send) -> np.ndarray:
        key = request_key(call=call, fingerprint=self._fingerprint(), iteration=self.iteration, extra=extra,
                          arrays={"seed": np.asarray(seed, np.int64), "image": image})
        if self._cache is not None:
            body = self._cache.get(self.iteration, key)
            if body is not None:
                self.meter.add(images=n, cached_images=n)
                return np.load(io.BytesIO(body))
        if self.max_images is not None and self.meter.total_images_requested + n > self.max_images:
            raise RemoteAPIError(
                f"HostedImageAPI: asking for {n} more image(s) would pass max_images={self.max_images} "
                f"({self.meter.total_images_requested} requested so far in this process)"
            )
        out = send()
        if self._cache is not None:
            buffer = io.BytesIO()
            np.save(buffer, out)
            self._cache.put(self.iteration, key, buffer.getvalue())
        self.meter.add(images=n)
        return out

    def _generate(self, positions: np.ndarray, prompt: str, *, seed: int) -> np.ndarray:
        n = len(positions)

        def send() -> np.ndarray:
            what = f"HostedImageAPI generation request ({n} image(s), prompt {prompt!r}, iteration {self.iteration})"
            url, response = self.pool.request(
                "POST", "/images/generations", what=what, images=n,
                json={"model": self.model, "prompt": prompt, "n": n, "size": self.size, "response_format": "b64_json"},
            )
            return self._decode(response, n=n, url=url, what=what)

        return self._cached("generations", seed=seed, extra=prompt + f"|{n}", image=None, n=n, send=send)

    def _vary(self, image: np.ndarray, *, seed: int) -> np.ndarray:
        def send() -> np.ndarray:
            what = f"HostedImageAPI variation request (1 image, iteration {self.iteration})"
            fields = {"image": ("image.png", _png(image), "image/png"), "model": self.model, "n": "1", "size": self.size,
                      "response_format": "b64_json"}
            url, response = self.pool.request("POST", "/images/variations", what=what, images=1, fields=fields)
            return self._decode(response, n=1, url=url, what=what)[0]

        return self._cached("variations", seed=seed, extra="", image=image, n=1, send=send)

    def _decode(self, response, *, n: int, url: str, what: str) -> np.ndarray:
        from PIL import Image

        try:
            items = response.json()["data"]
            if not isinstance(items, list) or len(items) != n:
                raise ValueError(f"'data' has {len(items) if isinstance(items, list) else type(items).__name__} entries, "
                                 f"{n} asked")
            out = []
            for item in items:
                with Image.open(io.BytesIO(base64.b64decode(item["b64_json"], validate=True))) as img:
                    img = img.convert("L" if self.channels == 1 else "RGB")
                    if img.size != (self.image_size, self.image_size):
                        img = img.resize((self.image_size, self.image_size), Image.BICUBIC)
                    out.append(np.asarray(img, dtype=np.uint8).reshape(self.image_shape))
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise RemoteAPIError(f"{url} answered {what} with a malformed response: {type(err).__name__}: {err}") from None
        return np.stack(out)


def _png(image: np.ndarray) -> bytes:
    """``image`` (uint8 ``(H, W, C)``) as PNG bytes (RGBA, the format the variation endpoint takes)."""
    from PIL import Image

    pixels = image[..., 0] if image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGBA").save(buffer, format="PNG")
    return buffer.getvalue()
