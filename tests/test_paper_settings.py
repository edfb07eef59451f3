"""The paper-settings configs run the paper's algorithm, and docs/reproduction.md's privacy numbers hold."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from pe_lightning import privacy

ROOT = Path(__file__).resolve().parents[1]


def _config(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / name).read_text())


def _callback(config: dict, suffix: str) -> dict | None:
    return next((c.get("init_args", {}) for c in config["trainer"]["callbacks"] if c["class_path"].endswith(suffix)), None)


# ---------------------------------------------------------------- the accountant's numbers in docs/reproduction.md
def test_cifar10_script_sigma_gives_2_594_and_the_papers_0_67_needs_sigma_24():
    assert privacy.epsilon(noise_multiplier=5 * math.sqrt(2), iterations=20, delta=1e-5) == pytest.approx(2.594, abs=5e-4)
    sigma = privacy.noise_multiplier(epsilon=0.67, iterations=20, delta=1e-5)
    assert sigma == pytest.approx(24.05, abs=0.01)
    assert privacy.epsilon(noise_multiplier=24.0, iterations=20, delta=1e-5) == pytest.approx(0.6715, abs=5e-4)


def test_camelyon17_and_cat_script_sigmas():
    assert privacy.epsilon(noise_multiplier=2.1793, iterations=19, delta=1e-5) == pytest.approx(10.0, abs=5e-3)
    assert privacy.epsilon(noise_multiplier=2.0, iterations=17, delta=1e-3) == pytest.approx(7.890, abs=5e-4)
    assert privacy.epsilon(noise_multiplier=2.0, iterations=17, delta=1e-5) == pytest.approx(10.378, abs=5e-4)


@pytest.mark.parametrize("name,sigma", [("cifar10_adm.yaml", 5 * math.sqrt(2)), ("camelyon17_adm.yaml", 2.1793),
                                        ("cat_sd.yaml", 2.0)])
def test_paper_configs_calibrate_the_scripts_sigma(name, sigma):
    config = _config(name)
    budget = _callback(config, "PrivacyAccountant")
    iterations = config["model"]["init_args"]["iterations"]
    calibrated = privacy.noise_multiplier(epsilon=budget["epsilon"], iterations=iterations, delta=budget["delta"])
    assert calibrated == pytest.approx(sigma, rel=1e-3)


# ---------------------------------------------------------------- the paper's algorithm in the paper configs
@pytest.mark.parametrize("name,resolution", [("cifar10_adm.yaml", 32), ("camelyon17_adm.yaml", 64), ("cat_sd.yaml", 512)])
def test_paper_configs_run_the_papers_algorithm(name, resolution):
    model = _config(name)["model"]["init_args"]
    assert model["reuse_lookahead"] is False  # fresh variations of the selected parents
    assert model["lookahead_degree"] == 8 and model["num_nearest_neighbors"] == 1
    embedding = model["embedding"]
    assert embedding["class_path"].endswith("CleanInceptionEmbedding")  # DPSDA's Inception preprocessing
    assert embedding["init_args"]["resolution"] == resolution
    api = model["api"]["init_args"]
    if "ImprovedDiffusionAPI" in model["api"]["class_path"]:
        assert api["image_size"] == 64 and api["torch_dtype"] == "float32" and api["autocast"] is None


def test_paper_fid_is_the_clean_protocol_on_all_test_images():
    for name, resolution in [("cifar10_adm.yaml", 32), ("camelyon17_adm.yaml", 64)]:
        fid = _callback(_config(name), "FIDCallback")
        assert fid["feature"]["class_path"].endswith("CleanInceptionEmbedding")
        assert fid["feature"]["init_args"]["resolution"] == resolution
        assert fid.get("max_real") is None and fid.get("real_split", "test") == "test"  # DP-safe default, no cap


def test_paper_cat_config_lets_every_photo_vote_at_dpsdas_delta():
    config = _config("cat_sd.yaml")
    assert config["data"]["init_args"]["test_fraction"] == 0.0
    assert _callback(config, "PrivacyAccountant")["delta"] == 1e-3


def test_fast_variants_are_kept():
    for name in ("cifar10_adm_fast.yaml", "camelyon17_adm_fast.yaml", "cat_sd_fast.yaml"):
        assert (ROOT / "configs" / name).is_file()
    assert _config("cifar10_adm_fast.yaml")["model"]["init_args"]["api"]["init_args"]["image_size"] == 32


# ---------------------------------------------------------------- 64 px populations for a 32 px classifier
def test_synthetic_data_module_resizes_a_64px_population_to_the_real_size(tmp_path):
    from tiny_weights import write_image_folder

    from pe_lightning.classifier import SyntheticDataModule
    from pe_lightning.data import ImageFolderDataModule
    from pe_lightning.metrics.clean_resize import resize_uint8
    from pe_lightning.population import Population

    real = ImageFolderDataModule(private_dir=str(write_image_folder(tmp_path / "real", {"a": 4, "b": 4}, size=32)),
                                 test_fraction=0.25)
    rng = np.random.default_rng(0)
    pop = Population(images=rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8), labels=np.array([0, 1] * 3))
    with pytest.raises(ValueError, match="synthetic images are"):
        SyntheticDataModule.from_population(pop, real=real, val_fraction=0).setup()
    dm = SyntheticDataModule.from_population(pop, real=real, val_fraction=0, resize_to_real=True)
    dm.setup()
    assert dm.train_images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(dm.train_images, resize_uint8(pop.images, size=32).numpy())


# ---------------------------------------------------------------- num_nearest_neighbors k > 1 vs DPSDA
def test_k_votes_are_dpsdas_counts_over_sqrt_k_so_its_threshold_is_ours_times_sqrt_k():
    """DPSDA: each of k votes counts 1, noise sigma * sqrt(k), threshold H. Here: votes 1/sqrt(k), noise sigma.

    Our histogram is DPSDA's divided by sqrt(k) (clean counts and noise alike), so DPSDA's H is H / sqrt(k) here and
    the selection probabilities (thresholded counts, normalised) are then identical (docs/reproduction.md).
    """
    import torch

    from pe_lightning.voting import vote_histogram

    k, n = 4, 50
    rng = np.random.default_rng(0)
    assignments = torch.from_numpy(np.stack([rng.choice(n, size=k, replace=False) for _ in range(300)]))
    dpsda_clean = np.bincount(assignments.flatten().numpy(), minlength=n).astype(float)
    ours = vote_histogram(assignments, num_synthetic=n).numpy()
    np.testing.assert_allclose(ours * math.sqrt(k), dpsda_clean)
    sigma, threshold = 2.0, 6.0
    z = rng.normal(size=n)
    dpsda = np.clip(dpsda_clean + z * sigma * math.sqrt(k), threshold, None) - threshold
    here = np.clip(ours + z * sigma, threshold / math.sqrt(k), None) - threshold / math.sqrt(k)
    np.testing.assert_allclose(here * math.sqrt(k), dpsda, atol=1e-9)
    np.testing.assert_allclose(here / here.sum(), dpsda / dpsda.sum(), atol=1e-12)
