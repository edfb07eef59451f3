"""Models behind HTTP: ``python -m pe_lightning serve`` (LitServe) and :class:`RemoteImageAPI`.

Every server is bound to 127.0.0.1 on a free port, started and stopped by the test, and bounded
in time. Fast tests use small stand-in servers (``http.server`` in a thread) for the faults a
real server rarely shows (garbage, wrong shapes, slowness, 4xx/5xx); the ``slow`` ones run the
real ``serve`` subcommand in subprocesses and the real ``fit`` CLI in the session's CLI process
(tests/cli_worker.py), or in its own process where it is SIGKILLed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from pe_lightning.apis import DrawText, RemoteImageAPI
from pe_lightning.apis.http_pool import RemoteAPIError, retry_after_seconds
from pe_lightning.apis.response_cache import ResponseCache
from pe_lightning.seeding import make_generator
from pe_lightning.serving.protocol import (
    ProtocolError,
    Request,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

from test_distributed_and_resume import fit, load_final, run_cli  # the fit CLI: in the session's CLI process, in a subprocess

ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = ROOT / "configs" / "serve" / "mnist_drawtext.yaml"
CLASS_NAMES = [str(i) for i in range(10)]


# ----------------------------------------------------------------------------- stand-in servers
class StandIn:
    """A loopback HTTP server speaking the serve protocol, with a chosen behaviour, recording what it receives.

    ``mode``: ``"ok"`` (answers with an in-process DrawText), ``"garbage"``, ``"wrong_shape"``,
    ``"slow"`` (sleeps ``delay_s`` before answering), ``"refuse"`` (HTTP 400), ``"down"`` (HTTP 503).
    """

    def __init__(self, mode: str = "ok", *, fingerprint: str = "f" * 16, class_names=CLASS_NAMES, delay_s: float = 3.0):
        self.mode, self.delay_s = mode, delay_s
        self.metadata = {"protocol": 1, "api": "pe_lightning.apis.drawtext.api.DrawText", "fingerprint": fingerprint,
                         "image_shape": [28, 28, 1], "class_names": class_names, "max_degree": 1.0}
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/x-npz") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_GET(self):
                self._send(200, json.dumps(stand_in.metadata).encode(), "application/json")

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with stand_in.lock:
                    stand_in.bodies.append(body)
                self._send(*stand_in.answer(self.path.strip("/"), body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, call: str, body: bytes) -> tuple[int, bytes]:
        from pe_lightning.serving.litapi import call_api

        if self.mode == "garbage":
            return 200, b"<html>this is not an npz archive</html>"
        if self.mode == "refuse":
            return 400, json.dumps({"detail": "DrawText.random: labels must lie in [0, 10)"}).encode()
        if self.mode == "down":
            return 503, json.dumps({"detail": "not ready"}).encode()
        if self.mode == "slow":
            time.sleep(self.delay_s)
        out = call_api(drawtext(), decode_request(call, body))
        images = out.images[:, :-1] if self.mode == "wrong_shape" else out.images
        return 200, encode_response(images, out.conditions)

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@functools.lru_cache(maxsize=1)
def drawtext() -> DrawText:
    """One in-process DrawText (its glyph atlas is built once)."""
    api = DrawText(image_size=28)
    api.setup(class_names=CLASS_NAMES)
    return api


def remote(*servers, **kwargs) -> RemoteImageAPI:
    api = RemoteImageAPI(urls=[s.url for s in servers], backoff_s=0.01, **kwargs)
    api.setup(class_names=CLASS_NAMES)
    return api


def reference(labels, seed=0):
    return drawtext().random(labels=labels, generator=make_generator(seed, 0, "random", 0))


# ----------------------------------------------------------------------------- protocol
def test_protocol_round_trip_and_named_errors():
    labels = np.arange(5, dtype=np.int64)
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    req = Request(call="variation", labels=labels, iteration=3, seed=7, images=images,
                  conditions={"font": np.arange(5), "warp": np.zeros((5, 2, 4, 4), np.float32)}, degree=0.25)
    back = decode_request("variation", encode_request(req))
    assert back.iteration == 3 and back.seed == 7 and back.degree == 0.25 and back.generator_state is None
    np.testing.assert_array_equal(back.images, images)
    np.testing.assert_array_equal(back.conditions["warp"], req.conditions["warp"])
    body = encode_response(images, {"font": np.arange(5)})
    assert len(body) < images.nbytes + 1024  # raw bytes, not JSON pixel lists
    out, cond = decode_response(body, n=5, image_shape=(28, 28, 1))
    np.testing.assert_array_equal(out, images)
    with pytest.raises(ProtocolError, match="not an npz archive"):
        decode_request("random", b"garbage")
    with pytest.raises(ProtocolError, match=r"lacks the fields \['images', 'degree'\]"):
        decode_request("variation", encode_request(Request(call="random", labels=labels, seed=1)))
    with pytest.raises(ProtocolError, match=r"must be uint8 \(5, 28, 28, 1\), got dtype uint8 shape \(5, 27, 28, 1\)"):
        decode_response(encode_response(images[:, 1:], {}), n=5, image_shape=(28, 28, 1))
    with pytest.raises(ProtocolError, match="condition 'font' must have first dimension 5"):
        decode_response(encode_response(images, {"font": np.arange(4)}), n=5, image_shape=(28, 28, 1))
    with pytest.raises(ProtocolError, match="exactly one of 'seed' and 'generator_state'"):
        Request(call="random", labels=labels)


def test_remote_api_arguments_are_checked():
    with pytest.raises(ValueError, match="urls must be a non-empty list"):
        RemoteImageAPI(urls="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="http:// or https://"):
        RemoteImageAPI(urls=["127.0.0.1:8000"])
    with pytest.raises(ValueError, match="lists a server twice"):
        RemoteImageAPI(urls=["http://127.0.0.1:1", "http://127.0.0.1:1/"])
    with pytest.raises(ValueError, match="request_size must be an integer > 0"):
        RemoteImageAPI(urls=["http://127.0.0.1:1"], request_size=0)
    with pytest.raises(ValueError, match="timeout_s must be a number > 0"):
        RemoteImageAPI(urls=["http://127.0.0.1:1"], timeout_s=-1)


# ----------------------------------------------------------------------------- client vs stand-ins
def test_one_request_per_call_reproduces_the_in_process_api_on_any_server():
    labels = np.arange(12) % 10
    with StandIn() as a, StandIn() as b:
        api = remote(a, b)
        outs = [api.random(labels=labels, generator=make_generator(0, 0, "random", 0)) for _ in range(2)]
        metrics = api.take_metrics()
    ref = reference(labels)
    for out in outs:  # one call went to each server (least loaded, ties in turn): both give the in-process images
        np.testing.assert_array_equal(out.images, ref.images)
        np.testing.assert_array_equal(out.conditions["warp"], ref.conditions["warp"])
    assert len(a.bodies) == len(b.bodies) == 1
    assert metrics["api/images"] == 24 and metrics["api/images_requested_total"] == 24 and metrics["api/retries"] == 0


def test_split_requests_are_reproducible_and_independent_of_the_number_of_servers():
    labels = np.arange(20) % 10
    with StandIn() as a, StandIn() as b:
        one = remote(a, request_size=3).random(labels=labels, generator=make_generator(1, 0, "random", 0))
        two = remote(a, b, request_size=3).random(labels=labels, generator=make_generator(1, 0, "random", 0))
    np.testing.assert_array_equal(one.images, two.images)
    assert len(one.images) == 20 and len(b.bodies) > 0  # 7 requests; the two-server client used both


def test_garbage_and_wrong_shapes_are_clear_errors_naming_the_server_and_request():
    labels = np.arange(4)
    with StandIn("garbage") as bad:
        with pytest.raises(RemoteAPIError, match=rf"{bad.url} answered RemoteImageAPI random request 1/1 \(4 images, "
                                                 r"iteration 0\) with a malformed response: .*not an npz archive"):
            remote(bad).random(labels=labels, generator=make_generator(0, 0, "random", 0))
    with StandIn("wrong_shape") as bad:
        with pytest.raises(RemoteAPIError, match=rf"{bad.url} answered .* must be uint8 \(4, 28, 28, 1\), got .*\(4, 27, 28, 1\)"):
            remote(bad).random(labels=labels, generator=make_generator(0, 0, "random", 0))


def test_a_refused_request_is_not_retried_and_shows_the_server_detail():
    with StandIn("refuse") as bad:
        with pytest.raises(RemoteAPIError, match=rf"{bad.url} refused RemoteImageAPI random request .*HTTP 400: "
                                                 r"DrawText.random: labels must lie"):
            remote(bad).random(labels=np.arange(3), generator=make_generator(0, 0, "random", 0))
        assert len(bad.bodies) == 1


def test_a_slow_server_times_out_and_the_request_goes_to_the_other():
    labels = np.arange(6)
    with StandIn("slow", delay_s=5.0) as slow, StandIn() as ok:
        api = remote(slow, ok, timeout_s=0.5, retries=2)
        for _ in range(2):  # whichever server a call starts on, it ends with the images of the healthy one
            out = api.random(labels=labels, generator=make_generator(0, 0, "random", 0))
            np.testing.assert_array_equal(out.images, reference(labels).images)
        assert api.take_metrics()["api/retries"] >= 1
        with pytest.raises(RemoteAPIError, match=rf"random request 1/1 \(6 images, iteration 0\) failed after 2 attempt\(s\): "
                                                 rf"{slow.url}: no response within the timeout .*timeout_s=0.5"):
            remote(slow, timeout_s=0.5, retries=1).random(labels=labels, generator=make_generator(0, 0, "random", 0))


def test_unavailable_servers_are_retried_elsewhere_and_every_attempt_is_named():
    with StandIn("down") as down, StandIn() as ok:
        api = remote(down, ok)
        out = api.random(labels=np.arange(5), generator=make_generator(0, 0, "random", 0))
        np.testing.assert_array_equal(out.images, reference(np.arange(5)).images)
        with pytest.raises(RemoteAPIError, match=rf"failed after 3 attempt\(s\): {down.url}: HTTP 503: not ready; "):
            remote(down, retries=2).random(labels=np.arange(5), generator=make_generator(0, 0, "random", 0))


def test_servers_of_different_configs_or_classes_are_refused():
    with StandIn(fingerprint="a" * 16) as a, StandIn(fingerprint="b" * 16) as b:
        with pytest.raises(RemoteAPIError, match=rf"{a.url} serves config a+ .* but {b.url} serves b+"):
            remote(a, b)
    with StandIn(class_names=["x", "y"]) as a:
        with pytest.raises(ValueError, match=r"class names \['0', .*\] differ from those .* serves \['x', 'y'\]"):
            remote(a)
        with pytest.raises(ValueError, match="expect_fingerprint='0000' but"):
            RemoteImageAPI(urls=[a.url], expect_fingerprint="0000").setup()
        with pytest.raises(ValueError, match="image_size=32 but .* serves images of shape"):
            RemoteImageAPI(urls=[a.url], image_size=32).setup()
        assert RemoteImageAPI(urls=[a.url], expect_api="pe_lightning.apis.DrawText").image_shape == (28, 28, 1)
    with pytest.raises(RemoteAPIError, match=r"no server answered GET /metadata: http://127.0.0.1:9: "):
        RemoteImageAPI(urls=["http://127.0.0.1:9"], retries=0, connect_timeout_s=1).setup()


def test_the_response_cache_answers_a_repeated_request_without_sending_it(tmp_path):
    labels = np.arange(10)
    with StandIn() as a:
        first = remote(a, response_cache=str(tmp_path / "cache"))
        out1 = first.random(labels=labels, generator=make_generator(0, 0, "random", 0))
        again = remote(a, response_cache=str(tmp_path / "cache"))  # a resumed run: a new process, the same folder
        out2 = again.random(labels=labels, generator=make_generator(0, 0, "random", 0))
        other = again.random(labels=labels, generator=make_generator(0, 0, "random", 1))  # another stream: asked
    np.testing.assert_array_equal(out1.images, out2.images)
    assert not np.array_equal(out1.images, other.images)
    assert len(a.bodies) == 2
    metrics = again.take_metrics()
    assert metrics["api/cached_images"] == 10 and metrics["api/images_requested_total"] == 10


def test_response_cache_keeps_the_current_and_previous_iteration(tmp_path):
    cache = ResponseCache(tmp_path)
    for t in range(4):
        cache.put(t, "k", b"x")
    (tmp_path / "mine").mkdir()
    cache.start_iteration(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iteration_2", "iteration_3", "mine"]
    assert cache.get(3, "k") == b"x" and cache.get(0, "k") is None


def test_retry_after_is_read_as_seconds_or_a_date():
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# ----------------------------------------------------------------------------- the real server and the CLI
def contains_private_image(bodies: list[bytes], private: np.ndarray) -> bool:
    """Whether any request body holds any private image: as an image of its arrays, or as raw bytes anywhere."""
    wanted = {img.tobytes() for img in private}
    for body in bodies:
        if any(img.tobytes() in body for img in private):
            return True
        with np.load(__import__("io").BytesIO(body)) as arrays:
            for key in arrays.files:
                value = arrays[key]
                if value.ndim == 4 and value.shape[1:] == private.shape[1:] and any(v.tobytes() in wanted for v in value):
                    return True
    return False


def pe_config(path: Path, *, out: Path, api: dict, callbacks=()) -> Path:
    """A small PE run (seeded noise, so that two runs compare) with ``api``."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
            "default_root_dir": str(out),
            "callbacks": [
                {"class_path": "pe_lightning.callbacks.PrivacyAccountant", "init_args": {"epsilon": 2.0, "delta": 1e-5}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"save_last": True, "every_n_epochs": 1}},
                *callbacks,
            ],
        },
        "model": {
            "class_path": "pe_lightning.PrivateEvolution",
            "init_args": {
                "iterations": 2, "num_samples_per_class": 6, "variation_degrees": [0.5, 0.3], "lookahead_degree": 2,
                "threshold": 0.5, "seed": 3, "api_batch_size": 16, "save_png": False, "noise": "seeded", "api": api,
                "embedding": {"class_path": "pe_lightning.embeddings.PixelEmbedding", "init_args": {"size": 14}},
            },
        },
        "data": {"class_path": "pe_lightning.data.MNISTDataModule", "init_args": {"num_private": 120, "batch_size": 32}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def assert_same_population(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def remote_api(*urls: str) -> dict:
    return {"class_path": "pe_lightning.apis.RemoteImageAPI",
            "init_args": {"urls": list(urls), "image_size": 28, "expect_api": "pe_lightning.apis.DrawText"}}


def recorded(server) -> list[Path]:
    return sorted(server.record_dir.glob("*.npz"))


@pytest.fixture(scope="module")
def in_process_population(tmp_path_factory, cli_worker) -> dict[str, np.ndarray]:
    """The reference: the same small run with DrawText in process."""
    tmp = tmp_path_factory.mktemp("in_process")
    api = {"class_path": "pe_lightning.apis.DrawText", "init_args": {"image_size": 28}}
    fit(cli_worker, pe_config(tmp / "run.yaml", out=tmp / "out", api=api), cwd=tmp)
    return load_final(tmp / "out")


@pytest.fixture(scope="module")
def second_server(tmp_path_factory):
    """Another ``serve`` of the same config on another port (recording its requests)."""
    from pe_lightning.serving.local import LocalServer

    record = tmp_path_factory.mktemp("second_server_requests")
    server = LocalServer(SERVE_CONFIG, args=["--accelerator", "cpu", "--devices", "1", "--record_requests", str(record)])
    server.record_dir = record
    with server:
        yield server


@pytest.mark.slow
def test_pe_against_two_served_drawtexts_gives_the_in_process_population_and_sends_no_private_image(
    served_drawtext, second_server, in_process_population, tmp_path, cli_worker
):
    from pe_lightning.data import MNISTDataModule

    before = {s.url: len(recorded(s)) for s in (served_drawtext, second_server)}
    out = tmp_path / "out"
    proc = fit(cli_worker, pe_config(tmp_path / "run.yaml", out=out, api=remote_api(served_drawtext.url, second_server.url)),
               cwd=tmp_path)
    assert_same_population(load_final(out), in_process_population)
    log = proc.stdout + proc.stderr
    assert "api/images=" in log and "api/requests_s=" in log and "images requested from the model API:" in log
    assert json.loads((out / "summary.json").read_text())["api_images_requested"] > 0
    assert (out / "api_responses").is_dir()  # the response cache under the output root
    new = {s.url: recorded(s)[before[s.url]:] for s in (served_drawtext, second_server)}
    assert all(new.values()), "both servers answered requests of the run"
    dm = MNISTDataModule(num_private=120)
    dm.setup("fit")
    bodies = [p.read_bytes() for paths in new.values() for p in paths]
    assert not contains_private_image(bodies, dm.private_images)
    leaked = encode_request(Request(call="variation", labels=np.zeros(1, np.int64), seed=0,
                                    images=dm.private_images[5:6], degree=0.1))
    assert contains_private_image([leaked], dm.private_images)  # the search finds one when it is there


@pytest.mark.slow
def test_a_server_killed_mid_run_is_replaced_by_the_other_and_the_population_is_the_same(
    served_drawtext, in_process_population, tmp_path, cli_worker
):
    from pe_lightning.serving.local import LocalServer

    record = tmp_path / "victim_requests"
    victim = LocalServer(SERVE_CONFIG, args=["--accelerator", "cpu", "--devices", "1", "--record_requests", str(record)])
    stop = threading.Event()

    def kill_after_three_requests() -> None:
        while not stop.is_set():
            if len(list(record.glob("*.npz"))) >= 3:
                victim.kill()  # SIGKILL the server's process group, mid-request or between two
                return
            time.sleep(0.02)

    with victim:
        watcher = threading.Thread(target=kill_after_three_requests, daemon=True)
        watcher.start()
        out = tmp_path / "out"
        proc = fit(cli_worker, pe_config(tmp_path / "run.yaml", out=out, api=remote_api(victim.url, served_drawtext.url)),
                   cwd=tmp_path)
        stop.set()
        watcher.join(timeout=10)
        assert victim.process.returncode == -9, "the server was killed during the run"
    assert_same_population(load_final(out), in_process_population)
    retries = [float(part.split("=")[1]) for part in (proc.stdout + proc.stderr).split() if part.startswith("api/retries=")]
    assert sum(retries) >= 1


@pytest.mark.slow
def test_a_resumed_run_reissues_no_request_it_already_received(served_drawtext, in_process_population, tmp_path, cli_worker):
    kill = {"class_path": "pe_testing.KillAt", "init_args": {"iteration": 2}}
    before = len(recorded(served_drawtext))
    config = pe_config(tmp_path / "run.yaml", out=tmp_path / "out", api=remote_api(served_drawtext.url), callbacks=[kill])
    killed = run_cli(config, cwd=tmp_path, kill=True, check=False)  # its own process: SIGKILLed mid-run
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-3000:]
    during_first = len(recorded(served_drawtext)) - before
    proc = fit(cli_worker, config, "--ckpt_path=last", cwd=tmp_path)
    assert_same_population(load_final(tmp_path / "out"), in_process_population)
    bodies = [p.read_bytes() for p in recorded(served_drawtext)[before:]]
    digests = [hashlib.sha256(b).hexdigest() for b in bodies]
    assert len(bodies) > during_first > 0
    assert len(set(digests)) == len(digests), "a request answered before the kill was sent again"
    assert "api/cached_images=" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_many_concurrent_requests_are_all_answered(served_drawtext):
    before = len(recorded(served_drawtext))
    api = RemoteImageAPI(urls=[served_drawtext.url], request_size=2, max_concurrency=12)
    api.setup(class_names=CLASS_NAMES)
    labels = np.arange(240) % 10
    results: list = [None] * 3

    def call(i: int) -> None:
        results[i] = api.random(labels=labels, generator=make_generator(0, 0, "random", 7))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]  # 3 calls x 120 requests, 12 at a time
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(r is not None and r.images.shape == (240, 28, 28, 1) for r in results)
    for r in results[1:]:
        np.testing.assert_array_equal(r.images, results[0].images)
    metrics = api.take_metrics()
    assert metrics["api/images"] == 720 and metrics["api/retries"] == 0
    assert len(recorded(served_drawtext)) - before == 360


@pytest.mark.slow
def test_serve_reports_a_bad_config_in_one_line(tmp_path, cli_worker):
    config = tmp_path / "bad.yaml"
    config.write_text("api:\n  class_path: pe_lightning.apis.DrawText\n  init_args:\n    image_size: 3\nport: 8000\n")
    proc = cli_worker.run(["serve", "--config", str(config)], cwd=tmp_path, timeout=300)  # `python -m pe_lightning serve`
    assert proc.returncode != 0
    assert "image_size must be an int >= 8, got 3" in proc.stdout, proc.stdout[-3000:]


def test_batched_workers_run_each_request_with_its_own_stream_and_isolate_bad_ones():
    """LitServe's dynamic batching (max_batch_size > 1) hands a worker several requests: each is its own API call."""
    from fastapi import HTTPException

    from pe_lightning.serving.litapi import ImageLitAPI

    worker = ImageLitAPI(api=DrawText(image_size=28), class_names=CLASS_NAMES, max_batch_size=4)
    worker.setup("cpu")
    labels = np.arange(6) % 10
    good = encode_request(Request(call="random", labels=labels, generator_state=make_generator(0, 0, "random", 0).get_state().numpy()))
    bad = encode_request(Request(call="random", labels=np.array([12]), seed=1))
    batch = [worker.decode_request(("random", good)), worker.decode_request(("random", b"junk")),
             worker.decode_request(("random", bad)), worker.decode_request(("random", good))]
    outputs = worker.predict(batch)
    first, junk, refused, again = outputs
    np.testing.assert_array_equal(first.images, reference(labels).images)
    np.testing.assert_array_equal(again.images, first.images)
    assert isinstance(junk, HTTPException) and junk.status_code == 400 and "not an npz archive" in junk.detail
    assert isinstance(refused, HTTPException) and refused.status_code == 400 and "labels must lie in [0, 10)" in refused.detail
    images, _ = decode_response(worker.encode_response(first), n=6, image_shape=(28, 28, 1))
    np.testing.assert_array_equal(images, first.images)
    with pytest.raises(HTTPException):
        worker.encode_response(junk)


def test_the_resume_fingerprint_records_which_servers_but_not_how_they_are_reached():
    from pe_lightning.run_fingerprint import public_description

    described = public_description(RemoteImageAPI(urls=["http://127.0.0.1:1"], timeout_s=3.0, retries=1,
                                                  response_cache="/tmp/x", request_size=4))
    assert described["args"]["urls"] == ["http://127.0.0.1:1"] and described["args"]["request_size"] == 4
    assert not {"timeout_s", "retries", "response_cache"} & set(described["args"])
