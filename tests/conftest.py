import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PL_DISABLE_FORK", "1")

# The private side (embedding cache, secret noise keys) of every test run goes to a
# throw-away folder, never the user's ~/.cache.
if "PE_LIGHTNING_PRIVATE_DIR" not in os.environ:
    import tempfile

    os.environ["PE_LIGHTNING_PRIVATE_DIR"] = tempfile.mkdtemp(prefix="pe_lightning_private_")
# The public cache (DrawText's glyph atlases, about 110 MB at the demo's size) too: one per test
# session, shared by its tests, removed at the end.
if "PE_LIGHTNING_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["PE_LIGHTNING_CACHE_DIR"] = tempfile.mkdtemp(prefix="pe_lightning_public_")
    atexit.register(shutil.rmtree, os.environ["PE_LIGHTNING_CACHE_DIR"], ignore_errors=True)


import pytest  # noqa: E402 - after the environment above


@pytest.fixture(scope="session")
def tiny_diffusers_models(tmp_path_factory) -> dict[str, str]:
    """Tiny random-weight diffusers models saved with ``save_pretrained``, built once per session (tests/tiny_weights.py)."""
    from tiny_weights import build_tiny_diffusers_models

    return build_tiny_diffusers_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def tiny_adm_checkpoint(tmp_path_factory) -> str:
    """Path of a tiny random-weight improved-diffusion checkpoint (tests/tiny_weights.py: TINY_ADM_FLAGS)."""
    from tiny_weights import write_tiny_adm_checkpoint

    return write_tiny_adm_checkpoint(tmp_path_factory.mktemp("adm") / "tiny_adm.pt")


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory) -> str:
    """Path of a random-weight FID Inception state dict, written once per session (tests/tiny_weights.py)."""
    from tiny_weights import write_random_inception_weights

    return write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.fixture(scope="session")
def served_drawtext(tmp_path_factory):
    """``python -m pe_lightning serve --config configs/serve/mnist_drawtext.yaml`` on 127.0.0.1 for the session.

    Yields the :class:`~pe_lightning.serving.local.LocalServer`; it records every request body it
    receives under ``server.record_dir`` (the privacy tests search them). Stopped at the end.
    """
    from pathlib import Path

    from pe_lightning.serving.local import LocalServer

    record = tmp_path_factory.mktemp("served_drawtext_requests")
    config = Path(__file__).resolve().parents[1] / "configs" / "serve" / "mnist_drawtext.yaml"
    server = LocalServer(config, args=["--accelerator", "cpu", "--devices", "1", "--record_requests", str(record)])
    server.record_dir = record
    with server:
        yield server


@pytest.fixture(scope="session")
def cli_worker(tmp_path_factory):
    """A :class:`cli_worker.CLIWorker`: runs ``python -m pe_lightning`` commands in one long-lived process.

    For tests about what a command does (shipped configs, README commands); it saves the
    interpreter's start-up per command. Tests about signals, locks or DDP start their own processes.
    """
    from pathlib import Path

    from cli_worker import CLIWorker

    tests = str(Path(__file__).resolve().parent)
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=tests + os.pathsep + os.environ.get("PYTHONPATH", ""))
    worker = CLIWorker(env=env, log_dir=tmp_path_factory.mktemp("cli_worker"))
    yield worker
    worker.close()
