""":class:`HostedImageAPI` against a local stand-in of an OpenAI-compatible images API (loopback only).

The stand-in speaks the same protocol (``/images/generations`` JSON, ``/images/variations``
multipart, ``data[i].b64_json`` PNGs, 429 + ``Retry-After``), checks the Bearer key and
records every request it receives. Nothing here touches the network.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from pe_lightning.apis import HostedImageAPI
from pe_lightning.apis.http_pool import RemoteAPIError
from pe_lightning.seeding import make_generator

KEY = "test-key-not-secret"


def _png_b64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class OpenAIStandIn:
    """A loopback stand-in for an OpenAI-compatible images API.

    Generation answers ``n`` gray 256x256 images derived from the prompt and a counter;
    variation answers the uploaded image, inverted, at 256x256. The first ``rate_limited``
    requests get HTTP 429 with ``Retry-After: 0.1``. ``requests`` holds every request
    received: ``(path, headers, body)``.
    """

    def __init__(self, *, rate_limited: int = 0, broken: bool = False) -> None:
        self.rate_limited, self.broken = rate_limited, broken
        self.requests: list[tuple[str, dict, bytes]] = []
        self.lock = threading.Lock()
        self.counter = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with stand_in.lock:
                    stand_in.requests.append((self.path, dict(self.headers), body))
                    limited = stand_in.rate_limited > 0
                    stand_in.rate_limited -= int(limited)
                if limited:
                    return self._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "0.1"})
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._json(401, {"error": {"message": "Incorrect API key provided"}})
                if stand_in.broken:
                    return self._json(200, {"data": [{"b64_json": "not base64 png!"}]})
                if self.path.endswith("/images/generations"):
                    request = json.loads(body)
                    images = [stand_in.generated(request["prompt"]) for _ in range(int(request["n"]))]
                elif self.path.endswith("/images/variations"):
                    images = [stand_in.varied(self.headers["Content-Type"], body)]
                else:
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                self._json(200, {"created": 0, "data": [{"b64_json": _png_b64(img)} for img in images]})

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def generated(self, prompt: str) -> np.ndarray:
        with self.lock:
            self.counter += 1
            counter = self.counter
        level = hashlib.sha256(f"{prompt}/{counter}".encode()).digest()[0]
        return np.full((256, 256), level, dtype=np.uint8)

    @staticmethod
    def uploaded(content_type: str, body: bytes) -> np.ndarray:
        """The image file of a multipart variation request, as gray pixels."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        (part,) = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "image"]
        with Image.open(io.BytesIO(part.get_payload(decode=True))) as img:
            return np.asarray(img.convert("L"))

    def varied(self, content_type: str, body: bytes) -> np.ndarray:
        small = 255 - self.uploaded(content_type, body)
        return np.asarray(Image.fromarray(small).resize((256, 256), Image.NEAREST))

    def __enter__(self) -> "OpenAIStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("PE_TEST_IMAGES_KEY", KEY)
    return "PE_TEST_IMAGES_KEY"


def hosted(stand_in: OpenAIStandIn, api_key: str, **kwargs) -> HostedImageAPI:
    api = HostedImageAPI(base_url=stand_in.base_url, api_key_env=api_key, image_size=28, channels=1, backoff_s=0.01,
                         **kwargs)
    api.setup(class_names=["cat", "dog"])
    return api


def test_random_sends_each_class_prompt_and_counts_the_images(api_key):
    with OpenAIStandIn() as server:
        api = hosted(server, api_key, prompts={"dog": "a photo of a dog"}, prompt_template="a drawing of a {class_name}",
                     images_per_request=2)
        out = api.random(labels=np.array([0, 1, 1, 1, 0]), generator=make_generator(0, 0, "random", 0))
    assert out.images.shape == (5, 28, 28, 1) and out.images.dtype == np.uint8
    prompts = sorted(json.loads(body)["prompt"] for _, _, body in server.requests)
    assert prompts == ["a drawing of a cat", "a photo of a dog", "a photo of a dog"]  # n=2 per request: 1 + 2 requests
    assert all(headers["Authorization"] == f"Bearer {KEY}" for _, headers, _ in server.requests)
    metrics = api.take_metrics()
    assert metrics["api/images"] == 5 and metrics["api/images_requested_total"] == 5 and metrics["api/requests"] == 3


def test_variation_uploads_each_synthetic_image_and_returns_its_variation(api_key):
    images = np.stack([np.full((28, 28, 1), v, np.uint8) for v in (10, 200)])
    with OpenAIStandIn() as server:
        out = hosted(server, api_key).variation(images=images, conditions={}, labels=np.array([0, 1]), degree=0.5,
                                                generator=make_generator(0, 1, "variation", 0))
    assert [path for path, _, _ in server.requests] == ["/v1/images/variations"] * 2
    sent = sorted(int(OpenAIStandIn.uploaded(h["Content-Type"], b).mean()) for _, h, b in server.requests)
    assert sent == [10, 200]
    np.testing.assert_array_equal(np.sort(out.images.reshape(2, -1).mean(axis=1)), [55, 245])


def test_rate_limits_wait_for_retry_after_and_count_every_image_asked(api_key):
    with OpenAIStandIn(rate_limited=2) as server:
        api = hosted(server, api_key, max_concurrency=1)
        out = api.random(labels=np.array([0, 1]), generator=make_generator(0, 0, "random", 0))
    assert out.images.shape == (2, 28, 28, 1) and len(server.requests) == 4
    metrics = api.take_metrics()
    assert metrics["api/retries"] == 2 and metrics["api/images"] == 2
    assert metrics["api/images_requested_total"] == 4  # the two rate-limited asks count as asked


def test_errors_name_the_request_a_wrong_key_and_a_malformed_answer(api_key, monkeypatch):
    with OpenAIStandIn() as server:
        monkeypatch.setenv(api_key, "wrong")
        with pytest.raises(RemoteAPIError, match=r"refused HostedImageAPI generation request \(1 image\(s\), prompt 'cat', "
                                                 r"iteration 0\): HTTP 401: Incorrect API key provided"):
            hosted(server, api_key).random(labels=np.array([0]), generator=make_generator(0, 0, "random", 0))
    monkeypatch.setenv(api_key, KEY)
    with OpenAIStandIn(broken=True) as server:
        with pytest.raises(RemoteAPIError, match="answered HostedImageAPI generation request .* with a malformed response"):
            hosted(server, api_key).random(labels=np.array([0]), generator=make_generator(0, 0, "random", 0))


def test_max_images_caps_the_cost_and_the_cache_avoids_paying_twice(api_key, tmp_path):
    with OpenAIStandIn() as server:
        capped = hosted(server, api_key, max_images=3)
        with pytest.raises(RemoteAPIError, match="would pass max_images=3"):
            for _ in range(4):
                capped.random(labels=np.array([0]), generator=make_generator(0, 0, "random", 0))
        assert len(server.requests) == 3
        first = hosted(server, api_key, response_cache=str(tmp_path))
        a = first.random(labels=np.array([0, 1]), generator=make_generator(0, 0, "random", 0))
        resumed = hosted(server, api_key, response_cache=str(tmp_path))
        b = resumed.random(labels=np.array([0, 1]), generator=make_generator(0, 0, "random", 0))
    np.testing.assert_array_equal(a.images, b.images)
    assert len(server.requests) == 5 and resumed.take_metrics()["api/images_requested_total"] == 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="size must be one of"):
        HostedImageAPI(size="100x100")
    with pytest.raises(ValueError, match="prompt_template must contain"):
        HostedImageAPI(prompt_template="a cat")
    with pytest.raises(ValueError, match="images_per_request must be at most 10"):
        HostedImageAPI(images_per_request=11)
    api = HostedImageAPI(prompts=["a", "b", "c"])
    with pytest.raises(ValueError, match="prompts has 3 entries but there are 2 classes"):
        api.setup(class_names=["x", "y"])


def test_a_pe_run_sends_only_synthetic_images_and_public_prompts(api_key, tmp_path):
    """Privacy: the stand-in records every request of a whole PE run; no private image is among them."""
    from pe_testing import tiny_datamodule, tiny_model, tiny_trainer

    with OpenAIStandIn() as server:
        api = HostedImageAPI(base_url=server.base_url, api_key_env=api_key, image_size=28, channels=1, backoff_s=0.01,
                             prompt_template="a handwritten digit {class_name}")
        model = tiny_model(api=api, noise_multiplier=1.0, num_samples_per_class=3)
        dm = tiny_datamodule(num_private=120)
        tiny_trainer(tmp_path, max_epochs=2).fit(model, datamodule=dm)
    assert model.iteration == 2 and len(server.requests) > 60
    private = {img[..., 0].tobytes() for img in dm.private_images}
    sent_images = [OpenAIStandIn.uploaded(h["Content-Type"], b) for p, h, b in server.requests if p.endswith("variations")]
    assert sent_images and not any(img.tobytes() in private for img in sent_images)
    assert not any(img.tobytes() in body for _, _, body in server.requests for img in dm.private_images)
    prompts = {json.loads(b)["prompt"] for p, _, b in server.requests if p.endswith("generations")}
    assert prompts == {f"a handwritten digit {d}" for d in range(10)}
    # the search finds a private image when one is sent the way the client sends images
    from pe_lightning.apis.hosted import _png

    with Image.open(io.BytesIO(_png(dm.private_images[7]))) as img:
        assert np.asarray(img.convert("L")).tobytes() in private
