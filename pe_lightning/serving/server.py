"""``python -m pe_lightning serve --config api.yaml``: any ImageAPI from a config, over HTTP with LitServe.

The config names the API like a PE config's ``model.init_args.api`` (``class_path`` and
``init_args``) plus the server's settings::

    api:
      class_path: pe_lightning.apis.DrawText
      init_args: {image_size: 28}
    class_names: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]   # public labels, as the PE run's data
    port: 8000

Endpoints (:mod:`pe_lightning.serving.protocol`): ``POST /random``, ``POST /variation``,
``GET /metadata``, ``GET /health``. Clients: :class:`pe_lightning.apis.RemoteImageAPI`.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, Sequence

from pe_lightning.apis.base import ImageAPI
from pe_lightning.serving.protocol import PROTOCOL_VERSION, config_fingerprint

__all__ = ["build_parser", "build_server", "metadata_of", "serve_main"]

PROG = "python -m pe_lightning serve"


def metadata_of(api: ImageAPI, *, class_path: str, fingerprint: str, class_names: Sequence[str] | None) -> dict[str, Any]:
    """What ``GET /metadata`` answers for ``api``."""
    max_degree = getattr(api, "max_degree", None)
    return {
        "protocol": PROTOCOL_VERSION,
        "api": class_path,
        "fingerprint": fingerprint,
        "image_shape": [int(s) for s in api.image_shape],
        "class_names": list(class_names) if class_names is not None else None,
        "max_degree": float(max_degree) if max_degree is not None else None,
    }


def build_server(
    api: ImageAPI,
    *,
    metadata: dict[str, Any],
    class_names: Sequence[str] | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    workers_per_device: int = 1,
    max_batch_size: int = 1,
    batch_timeout: float = 0.0,
    timeout: float = 600.0,
    record_requests: str | None = None,
):
    """A ``litserve.LitServer`` serving ``api`` (not started: call ``.run(host=..., port=...)``).

    Args:
        api: the API (constructed, not set up: each inference worker calls ``setup``).
        metadata: ``GET /metadata``'s answer (:func:`metadata_of`).
        class_names: given to ``api.setup`` (public labels).
        accelerator: LitServe's ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        devices: devices to use (``"auto"``: all of the accelerator's).
        workers_per_device: inference workers per device, each with its own model copy.
        max_batch_size: LitServe's dynamic batching (requests per ``predict``; each keeps its generator).
        batch_timeout: seconds to wait to fill a batch.
        timeout: seconds a request may wait in the server's queue before a 504.
        record_requests: folder where every request body received is written (audit).
    """
    try:
        import litserve as ls

        from pe_lightning.serving.litapi import ImageAPISpec, ImageLitAPI
    except ImportError as err:
        raise ImportError(f"serving an ImageAPI needs litserve: pip install 'pe_lightning[serve]' ({err})") from err

    spec = ImageAPISpec(metadata=metadata, record_dir=record_requests)
    lit_api = ImageLitAPI(api=api, class_names=class_names, max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                          spec=spec)
    return ls.LitServer(lit_api, accelerator=accelerator, devices=devices, workers_per_device=workers_per_device,
                        timeout=timeout, disable_openapi_url=True)


def run_server(
    *,
    api: ImageAPI,
    class_names: list[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    accelerator: str = "auto",
    devices: int | str = "auto",
    workers_per_device: int = 1,
    max_batch_size: int = 1,
    batch_timeout: float = 0.0,
    timeout: float = 600.0,
    num_api_servers: int = 1,
    record_requests: str | None = None,
    log_level: str = "warning",
    fingerprint: str = "",
) -> None:
    """Serve ``api`` until interrupted (the ``serve`` subcommand's settings).

    Args:
        api: the ImageAPI to serve (``class_path`` / ``init_args``, as in a PE config).
        class_names: the class names the API is set up with (public labels, in the PE run's label
            order; e.g. DrawText draws them). Clients check they match their run's.
        host: ``127.0.0.1`` (default: this machine only), ``0.0.0.0`` or ``::`` (every interface).
        port: TCP port (1024-65535).
        accelerator: LitServe's ``auto``, ``cpu``, ``cuda`` or ``mps``.
        devices: devices to use (``auto``: all of the accelerator's).
        workers_per_device: inference workers per device, each with its own copy of the model.
        max_batch_size: LitServe's dynamic batching: queued requests per worker call (each keeps its random stream).
        batch_timeout: seconds to wait to fill a batch.
        timeout: seconds a request may wait in the server's queue before an HTTP 504.
        record_requests: a folder where every request body received is written (an audit of what the model side saw).
        num_api_servers: HTTP server processes (LitServe's ``num_api_servers``).
        log_level: uvicorn's log level.
        fingerprint: the served config's fingerprint (:func:`~pe_lightning.serving.protocol.config_fingerprint`).
    """
    class_path = f"{type(api).__module__}.{type(api).__qualname__}"
    metadata = metadata_of(api, class_path=class_path, fingerprint=fingerprint, class_names=class_names)
    server = build_server(
        api, metadata=metadata, class_names=class_names, accelerator=accelerator, devices=devices,
        workers_per_device=workers_per_device, max_batch_size=max_batch_size, batch_timeout=batch_timeout,
        timeout=timeout, record_requests=record_requests,
    )
    print(f"[PE] serving {class_path} (config fingerprint {fingerprint or '-'}, image shape {tuple(api.image_shape)}) "
          f"on http://{host}:{port}: POST /random, POST /variation, GET /metadata, GET /health", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` shuts down like Ctrl+C: LitServe stops its workers
    server.run(host=host, port=port, num_api_servers=num_api_servers, log_level=log_level, generate_client_file=False,
               api_server_worker_type="process")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def build_parser():
    """The ``serve`` subcommand's parser (jsonargparse: ``--config``, ``--api``, the server settings)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=PROG, description="Serve a pe_lightning ImageAPI (RANDOM and VARIATION) over HTTP with LitServe")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with api, class_names and the settings below")
    parser.add_function_arguments(run_server, skip={"api", "fingerprint"})
    parser.add_subclass_arguments(ImageAPI, "api", required=True, help="the ImageAPI to serve (class_path and init_args)")
    return parser


def serve_main(args: Sequence[str] | None = None) -> None:
    """Parse ``args`` (default ``sys.argv[1:]`` after ``serve``), build the API, serve until interrupted."""
    parser = build_parser()
    config = parser.parse_args(list(args) if args is not None else sys.argv[1:])
    api_config = config.api.as_dict() if hasattr(config.api, "as_dict") else dict(config.api)
    fingerprint = config_fingerprint({"api": api_config, "class_names": config.class_names})
    init = parser.instantiate_classes(config)
    settings = {k: v for k, v in vars(init).items() if k not in ("config", "api", "__default_config__")}
    run_server(api=init.api, fingerprint=fingerprint, **settings)
