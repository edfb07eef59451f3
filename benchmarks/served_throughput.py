"""Images per second of DrawText in process vs behind one and two local ``serve`` servers, and the HTTP cost per image.

    python benchmarks/served_throughput.py --n 8192 --batch 1024 --servers 2

Same machine, same run: the in-process API, then :class:`~pe_lightning.apis.RemoteImageAPI`
against 1..``--servers`` servers (``python -m pe_lightning serve``, 127.0.0.1, one CPU
worker each) with the module's batching (``measure`` of ``api_throughput.py``: one request per
``--batch`` chunk, sequential, the PE default that reproduces the in-process population), and
with each chunk split into ``2 * servers`` concurrent requests (``request_size``). Prints one
JSON line per (mode, call); ``http_overhead_us_per_image`` is the extra wall time per image of
the one-request-per-chunk path over the in-process call, on one server. On a shared 2-core
machine the servers compete with the caller for the same cores: read two servers' figures
as "what the overhead costs", not as scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_throughput import measure  # noqa: E402 - the shared timing loop

from pe_lightning import DrawText  # noqa: E402
from pe_lightning.apis import RemoteImageAPI  # noqa: E402
from pe_lightning.serving.local import LocalServer  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "serve" / "mnist_drawtext.yaml"
CLASS_NAMES = [str(i) for i in range(10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192, help="images per call kind")
    parser.add_argument("--batch", type=int, default=1024, help="the module's api_batch_size (images per chunk)")
    parser.add_argument("--servers", type=int, default=2, help="measure 1..servers servers")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    common = {"benchmark": "served_throughput", "machine": platform.machine(), "cpus": os.cpu_count(),
              "omp_threads": os.environ.get("OMP_NUM_THREADS")}

    def emit(mode: str, servers: int, rows: list[dict], extra: dict | None = None) -> None:
        for row in rows:
            print(json.dumps({**common, "mode": mode, "servers": servers, **row, **(extra or {})}), flush=True)

    local = DrawText(image_size=28)
    local.setup(class_names=CLASS_NAMES)
    in_process = measure(local, n=args.n, batch=args.batch, class_names=CLASS_NAMES, repeats=args.repeats)
    emit("in_process", 0, in_process)
    servers = [LocalServer(CONFIG, args=["--accelerator", "cpu", "--devices", "1"]) for _ in range(args.servers)]
    try:
        for server in servers:
            server.start()
        for count in range(1, args.servers + 1):
            urls = [s.url for s in servers[:count]]
            for mode, request_size in (("one_request_per_chunk", None), ("split_concurrent", max(1, args.batch // (2 * count)))):
                api = RemoteImageAPI(urls=urls, request_size=request_size)
                api.setup(class_names=CLASS_NAMES)
                rows = measure(api, n=args.n, batch=args.batch, class_names=CLASS_NAMES, repeats=args.repeats)
                extra = {"request_size": request_size}
                if count == 1 and request_size is None:
                    for row, base in zip(rows, in_process):
                        row["http_overhead_us_per_image"] = round(1e6 * (row["seconds"] - base["seconds"]) / args.n, 1)
                emit(mode, count, rows, extra)
                api.pool.close()
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
