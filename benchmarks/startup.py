"""Start-up: seconds from process start to PE iteration 0 of the demo config, through the real CLI.

    python benchmarks/startup.py --repeats 3 [--config configs/X.yaml] [--atlas-cache cold] [CLI overrides ...]

Each repeat starts ``python -m pe_lightning fit --config configs/mnist_drawtext.yaml`` (W&B
offline, the full demo: the plan's T, N = 2,000) in a fresh process with its output root in a
temporary folder and a fresh private side. DrawText's glyph atlas is read from the user's
public cache (``--atlas-cache warm``, the default: a run after the first, the cache is built by
the first repeat when missing) or built (``--atlas-cache cold``: an empty cache folder per
repeat, as the very first run on a machine). A probe callback (:class:`StartupProbe`, added with
``--trainer.callbacks+=``) records the wall clock at each milestone, and the parent measures
from just before it starts the process, so interpreter start and every import are included.
Prints one JSON line per repeat and one with the medians and the best of the repeats (``best_*``),
and the 1-minute load average at the end:

* ``to_callbacks_s``: imports and CLI parsing done (the config's callbacks are being built);
* ``to_fit_setup_s``: trainer built, loggers started, data loaded (``setup`` of the callbacks);
* ``to_fit_start_s``: the callbacks' ``on_fit_start`` (after the FID reference statistics; the
  probe runs after the config's other callbacks), just before the module's;
* ``to_iteration_0_start_s``: **iteration 0 starts**: the private embeddings are done and the
  RANDOM API is about to generate its first chunk (the first ``on_stage("random", ...)``);
* ``to_iteration_0_s``: iteration 0 exists (the RANDOM population, with its FID, grid and snapshot);
* ``to_iteration_1_start_s``: the first private iteration starts;
* ``pe_s``: from there to the end of the last iteration; ``total_s``: the process's wall time;
* ``cpu_to_<milestone>_s``: the CPU seconds the process used until then (all threads; the
  interpreter start before the clock of ``time.process_time`` is not included). On a loaded machine
  it is a steadier proxy of the idle wall time than the wall time, for single-threaded start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pe_lightning.callbacks.base import PopulationCallback  # the child process imports this file as ``startup``

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MILESTONES = ("callbacks", "fit_setup", "fit_start", "iteration_0_start", "iteration_0", "iteration_1_start", "fit_end")

class StartupProbe(PopulationCallback):
    """Writes ``{milestone: time.time()}`` to ``path`` as the run passes each milestone.

    Args:
        path: the JSON file (rewritten at every milestone, so a crash keeps what was reached).
    """

    def __init__(self, *, path: str) -> None:
        super().__init__()
        self.path = path
        self.times: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._mark("callbacks")

    def _mark(self, name: str) -> None:
        self.times.setdefault(name, time.time())
        self.cpu.setdefault(name, time.process_time())  # CPU seconds of the process since it started (all threads)
        Path(self.path).write_text(json.dumps({"wall": self.times, "cpu": self.cpu}))

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._mark("fit_setup")

    def on_fit_start(self, trainer, pl_module) -> None:
        self._mark("fit_start")

    def on_stage(self, trainer, pl_module, *, stage: str, done: int, total: int) -> None:
        if stage == "random":  # the RANDOM API's first chunk is about to be generated (S_0, in the module's on_fit_start)
            self._mark("iteration_0_start")

    def on_population(self, trainer, pl_module, *, population, iteration: int) -> None:
        if iteration == 0:
            self._mark("iteration_0")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark("iteration_1_start")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._mark("fit_end")


def measure_once(*, config: Path, extra: list[str], cold_atlas: bool = False) -> dict[str, float]:
    """One fresh process: seconds from just before its start to each milestone."""
    with tempfile.TemporaryDirectory(prefix="pe_startup_") as tmp:
        probe = Path(tmp) / "probe.json"
        callback = json.dumps({"class_path": "startup.StartupProbe", "init_args": {"path": str(probe)}})
        env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=os.pathsep.join(
            p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p))
        env.setdefault("PE_LIGHTNING_PRIVATE_DIR", str(Path(tmp) / "private"))
        if cold_atlas:
            env["PE_LIGHTNING_CACHE_DIR"] = str(Path(tmp) / "public_cache")
        cmd = [sys.executable, "-m", "pe_lightning", "fit", "--config", str(config),
               f"--trainer.default_root_dir={Path(tmp) / 'out'}", f"--trainer.callbacks+={callback}", *extra]
        start = time.time()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        total = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"startup run failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
        probed = json.loads(probe.read_text())
    times, cpu = probed["wall"], probed["cpu"]
    row = {f"to_{name}_s": round(times[name] - start, 3) for name in MILESTONES if name in times}
    row.update({f"cpu_to_{name}_s": round(cpu[name], 3) for name in MILESTONES if name in cpu})
    row["pe_s"] = round(times["fit_end"] - times["iteration_1_start"], 3)
    row["total_s"] = round(total, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mnist_drawtext.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--atlas-cache", choices=("warm", "cold"), default="warm",
                        help="warm: the user's glyph atlas cache (built by the first run); cold: an empty one per repeat")
    args, extra = parser.parse_known_args()  # the rest goes to the CLI, e.g. --trainer.logger=false
    rows = []
    for repeat in range(args.repeats):
        row = measure_once(config=args.config, extra=extra, cold_atlas=args.atlas_cache == "cold")
        rows.append(row)
        print(json.dumps({"benchmark": "startup_repeat", "repeat": repeat, **row}), flush=True)
    median = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
    best = {f"best_{k}": round(min(r[k] for r in rows), 3) for k in rows[0]}  # on a shared machine, best-of-n
    print(json.dumps({"benchmark": "startup", "workload": f"python -m pe_lightning fit --config {args.config.name}",
                      "repeats": args.repeats, "atlas_cache": args.atlas_cache, "cpus": os.cpu_count(),
                      "load_average": os.getloadavg()[0],
                      **median, **best}), flush=True)


if __name__ == "__main__":
    main()
