"""The benchmark scripts run end to end at small sizes (their numbers are not checked here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc


def test_gpu_check_smoke_run_on_cpu_records_every_part(tmp_path):
    out = tmp_path / "gpu.jsonl"
    _run(str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick", "--out", str(out), cwd=tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["benchmark"] for r in rows]
    voting = {r["backend"]: r for r in rows if r["benchmark"] == "voting"}
    assert kinds.count("voting") == 3 and set(voting) == {"faiss", "torch", "auto"}
    assert voting["auto"]["resolved"] == "faiss"  # on the CPU
    (pe,) = [r for r in rows if r["benchmark"] == "gpu_pe_iteration"]
    assert pe["iteration_s"] > 0 and pe["api_s"] > 0 and 0 <= pe["reused_lookahead_fraction"] <= 1
    assert sorted(r["call"] for r in rows if r["benchmark"] == "gpu_api_throughput") == ["random", "variation"]
    (config,) = [r for r in rows if r["benchmark"] == "gpu_shipped_config"]  # --quick: the first GPU config
    assert config["passed"] and config["config"].startswith("configs/") and config["seconds"] > 0
    repro = {r["config"]: r for r in rows if r["benchmark"] == "gpu_reproduction"}  # every paper config, tiny stand-ins
    assert set(repro) == {"configs/cifar10_adm.yaml", "configs/camelyon17_adm.yaml", "configs/cat_sd.yaml"}
    for r in repro.values():
        assert r["random_images_per_s"] > 0 and r["variation_images_per_s"] > 0 and r["embedding_images_per_s"] > 0
        assert r["projected_hours"] > 0 and r["api_weights"] == "tiny random stand-in"
    assert repro["configs/cifar10_adm.yaml"]["image_shape"] == [64, 64, 3]  # the population stays at 64 px
    fit = repro["configs/camelyon17_adm.yaml"]  # --quick: one reduced `pe_lightning fit` of a paper config
    assert "fit_error" not in fit and fit["fit_time_iteration_s"] > 0 and fit["fit_samples"] == 4
    assert not any("error" in r for r in rows)


def test_reproduction_projection_counts_the_papers_work():
    """The full runs' sample-steps and embedded images (docs/reproduction.md), from the shipped paper configs."""
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    config = yaml.safe_load((ROOT / "configs" / "cifar10_adm.yaml").read_text())
    out = gpu_check.project_hours(name="cifar10_adm", config=config, random_s_per_step=1.0, variation_s_per_step=0.0,
                                  embed_per_s=1e12)
    assert out["sample_steps"] == 50_000 * 100 + 9 * 50_000 * 1_580  # RANDOM + (k + 1) N int(R s_t) over T = 20
    assert out["embedded_images"] == 50_000 + 20 * 8 * 50_000 + 21 * 50_000 + 10_000
    assert out["projected_api_h"] == round(50_000 * 100 / 3600, 2)
    camelyon = yaml.safe_load((ROOT / "configs" / "camelyon17_adm.yaml").read_text())
    steps = gpu_check.project_hours(name="camelyon17_adm", config=camelyon, random_s_per_step=0.0,
                                    variation_s_per_step=0.0, embed_per_s=1.0)["sample_steps"]
    assert steps == 302_436 * 10 + 9 * 302_436 * 160
    table = gpu_check.reproduction_table([{"config": "configs/x.yaml", "device": "cuda", "skipped": "weights not found"}])
    assert table.splitlines()[0].startswith("| config |") and "weights not found" in table


def test_gpu_check_parts_have_their_own_time_limit(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    rows, error = gpu_check.run_part("pe_iteration", device="cpu", quick=True, timeout=0.5)
    assert rows == [] and error.startswith("timed out after 0.5 s")
    assert {"cifar10_dit", "camelyon17_dit", "cat_sd", "cat_sd_fast", "cifar10_adm_fast"} <= set(gpu_check.gpu_configs())


def test_make_bench_quick_runs_every_benchmark(tmp_path, monkeypatch, capsys):
    """Each of ``run_all.py --quick``'s scripts, run in this process (no import cost per script);
    voting.py, which starts its own worker processes, is covered by the gpu_check test."""
    import runpy

    bench = ROOT / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    monkeypatch.chdir(tmp_path)
    run_all = runpy.run_path(str(bench / "run_all.py"))
    results = []
    for script, *args in run_all["QUICK_RUNS"]:
        if script == "voting.py":
            continue
        monkeypatch.setattr(sys, "argv", [script, *args])
        runpy.run_path(str(bench / script), run_name="__main__")
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert lines, f"{script} printed no result"
        results += [json.loads(line) for line in lines]
    assert {r.get("benchmark") for r in results} >= {"api_throughput", "plain_loop", "served_throughput"}
    served = [r for r in results if r.get("benchmark") == "served_throughput"]
    assert {r["mode"] for r in served} == {"in_process", "one_request_per_chunk", "split_concurrent"}
    assert all(r["images_per_s"] > 0 for r in served) and any("http_overhead_us_per_image" in r for r in served)
    iteration = [r for r in results if "overhead_pct" in r and "iteration_s" in r]
    assert iteration and all(r["iteration_s"] > 0 for r in iteration)
    plain = [r for r in results if r.get("benchmark") == "plain_loop"]
    assert len(plain) == 2 and all(r["same_final_population"] for r in plain)
    embeddings = [r for r in results if r.get("benchmark") == "embedding_throughput"]
    assert any(r["embedding"].startswith("HOGEmbedding") for r in embeddings) and all(r["cpu_seconds"] >= 0 for r in embeddings)
    run_all["print_tables"](results)
    tables = capsys.readouterr().out
    assert "| DrawText served |" in tables
    assert "| plain-loop comparison |" in tables and "| API call |" in tables and "| memory workload |" in tables
    assert "| embedding | dim | images | seconds | CPU seconds |" in tables
