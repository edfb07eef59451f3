"""Every command in the README is run by this test, so the README cannot rot.

The README's fenced blocks carry a tag after the language:

* ```` ```bash runnable ````: each command (``\\``-continued lines joined) runs through the CLI's entry
  point in the session's CLI process (tests/cli_worker.py), in order, in one temporary working folder
  (so a later command finds what an earlier one wrote, e.g. ``--ckpt_path last``), with
  :func:`tiny_overrides` appended. The overrides only shrink sizes, like ``tests/test_shipped_configs.py``'s
  SHRINK: 10 released images per class, lookahead 2, 120 private MNIST digits, one classifier epoch.
  The folder holds ``my_digits/{train,test}/<0-9>/*.png`` (random 28 x 28 grayscale images) for the "your own images" example and a link to ``configs/``
  (the README's commands are run from the checkout's root).
* ```` ```python runnable ````: the snippet runs as it is, in the same folder (it is small by design).
* ```` ```bash gpu ````: needs a GPU and weights; each ``python -m pe_lightning`` command is parsed
  with ``--print_config`` (config, classes and overrides valid), not run.
* ```` ```bash make ````: ``make -n <target>`` must succeed; ``make demo`` must run the README's
  first runnable command.

Untagged blocks are output or layouts, never commands; a ``bash`` or ``python`` block without a tag
fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pe_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TAGS = {"bash runnable", "python runnable", "bash gpu", "bash make"}
MAX_BYTES = 12 * 1024


def blocks(text: str) -> list[tuple[str, str]]:
    """``(info string, body)`` of every fenced block."""
    return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```\s*$", text, re.M | re.S)]


def commands(body: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


def tiny_overrides(args: list[str]) -> list[str]:
    """What the test appends to a runnable ``python -m pe_lightning`` command: sizes only."""
    config = Path(args[args.index("--config") + 1]).name if "--config" in args else ""
    if args[:1] == ["--help"] or "--help" in args:
        return []
    if config == "mnist_drawtext.yaml":
        tiny = ["--model.init_args.final_samples_per_class=10", "--model.init_args.approx_private_size=200",
                "--model.init_args.lookahead_degree=2", "--trainer.enable_progress_bar=false"]
        if "--data" not in args:  # the config's MNIST data
            tiny.append("--data.init_args.num_private=120")
        return tiny
    if config == "mnist_classifier.yaml":
        return ["--trainer.max_epochs=1"]
    raise AssertionError(f"the README runs {config or args}: give it tiny overrides here")


def _write_digit_folders(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("test", 2)):
        for c in range(10):
            folder = root / "my_digits" / split / str(c)
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(folder / f"img_{i:04d}.png")


def _tagged(tag: str) -> list[str]:
    return [body for info, body in blocks(README.read_text()) if info == tag]


def test_readme_is_short_and_every_code_block_is_tagged():
    text = README.read_text()
    assert len(text.encode()) <= MAX_BYTES, f"README.md is {len(text.encode())} bytes; move detail to docs/"
    for info, body in blocks(text):
        if info.split()[:1] in (["bash"], ["sh"], ["python"], ["console"]):
            assert info in TAGS, f"README block ```{info} is neither runnable nor gpu/make-tagged:\n{body}"
    assert _tagged("bash runnable") and _tagged("python runnable")


def test_readme_links_exist():
    """Every relative link of the README resolves."""
    for link in re.findall(r"\]\(([^)#]+)\)", README.read_text()):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_make_targets_run_the_readme_commands():
    for body in _tagged("bash make"):
        for cmd in commands(body):
            assert cmd[0] == "make"
            dry = subprocess.run(["make", "-n", *cmd[1:]], capture_output=True, text=True, cwd=ROOT)
            assert dry.returncode == 0, dry.stderr
            if cmd[1:] == ["demo"]:
                first = " ".join(commands(_tagged("bash runnable")[0])[0][1:])
                assert first in dry.stdout, (first, dry.stdout)


def test_gpu_commands_parse(capsys):
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for body in _tagged("bash gpu"):
            for cmd in commands(body):
                assert cmd[:3] == ["python", "-m", "pe_lightning"], cmd
                with pytest.raises(SystemExit) as done:
                    main([*cmd[3:], "--print_config"])
                assert done.value.code in (0, None), cmd
                assert "class_path" in capsys.readouterr().out
    finally:
        os.chdir(cwd)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # eight CLI runs in a row
def test_readme_runnable_commands_run(tmp_path, cli_worker):
    """Each ``python -m pe_lightning`` command runs through the CLI's entry point in the session's long-lived
    CLI process (tests/cli_worker.py: one interpreter start-up for all); the Python snippet runs as a script."""
    _write_digit_folders(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the README's commands run from the checkout's root
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    for info, body in blocks(README.read_text()):
        if info == "bash runnable":
            for cmd in commands(body):
                assert cmd[:3] == ["python", "-m", "pe_lightning"], f"only pe_lightning commands are runnable: {cmd}"
                proc = cli_worker.run([*cmd[3:], *tiny_overrides(cmd[3:])], cwd=tmp_path)
                assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stdout[-4000:]}"
        elif info == "python runnable":
            script = tmp_path / "readme_snippet.py"
            script.write_text(body)
            proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                                  timeout=900)
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
            assert "(200, 28, 28, 1)" in proc.stdout
    # What the README says each wrote is there.
    assert (tmp_path / "runs" / "my_digits" / "final" / "population.npz").is_file()
    assert (tmp_path / "outputs" / "mnist_drawtext" / "summary.json").is_file()
    assert list((tmp_path / "outputs" / "mnist_classifier").glob("**/last.ckpt"))
