"""Secret noise by default, the seeded opt-in, the key's life cycle, and no unaccounted spend."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import pe_lightning.noise as noise
from pe_lightning import privacy
from pe_lightning.callbacks import PrivacyAccountant
from pe_lightning.evolution import NoiseKeyLostWarning
from pe_lightning.noise import NoiseKey, NoiseKeyStore, SeededNoiseWarning, standard_normal
from pe_testing import shared_noise_key, tiny_datamodule, tiny_model, tiny_trainer


# ------------------------------------------------------------------ the key and the sampler
def test_secret_keys_are_256_bits_from_the_os_csprng(monkeypatch):
    calls = []
    real = noise.secrets.token_bytes
    monkeypatch.setattr(noise.secrets, "token_bytes", lambda n: calls.append(n) or real(n))
    a, b = NoiseKey.generate(), NoiseKey.generate()
    assert calls == [32, 32] and len(a.secret) == 32 and a.secret != b.secret
    assert a.mode == "secret" and a.key_id != b.key_id and len(a.key_id) == 16
    assert a.secret.hex() not in repr(a) and a.key_id in repr(a)
    with pytest.raises(ValueError, match="128 bits"):
        NoiseKey(secret=b"short")


def test_sampler_is_standard_normal_and_a_pure_function_of_key_iteration_shape():
    key = NoiseKey.generate()
    z = standard_normal(key, iteration=1, shape=(400_000,))
    assert z.dtype == np.float64 and z.shape == (400_000,)
    assert abs(z.mean()) < 6 / np.sqrt(z.size) and z.std() == pytest.approx(1.0, rel=0.01)
    assert np.mean(np.abs(z) < 1) == pytest.approx(0.6827, abs=0.005)
    assert np.abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01  # neighbours (one Box-Muller pair) uncorrelated
    np.testing.assert_array_equal(z, standard_normal(key, iteration=1, shape=400_000))
    assert not np.array_equal(z[:10], standard_normal(key, iteration=2, shape=(10,)))
    assert standard_normal(key, iteration=1, shape=(3, 5)).shape == (3, 5)
    # Seeded keys are a function of the seed only.
    assert NoiseKey.from_seed(3).secret == NoiseKey.from_seed(3).secret != NoiseKey.from_seed(4).secret


def test_key_store_round_trip_owner_only_and_clear_errors(tmp_path):
    store = NoiseKeyStore(tmp_path / "keys")
    key = NoiseKey.generate()
    path = store.save("abc123", key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert store.load("abc123").secret == key.secret and store.load("fff") is None
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="is not a pe_lightning noise key file"):
        store.load("abc123")
    with pytest.raises(ValueError, match="run_id"):
        store.path("../etc")
    with pytest.raises(ValueError, match="only secret keys"):
        store.save("abc", NoiseKey.from_seed(0))


# ------------------------------------------------------------------ the module
def _fit(root, *, callbacks=(), ckpt_path=None, max_epochs=2, max_steps=-1, **overrides):
    model = tiny_model(**overrides)
    trainer = tiny_trainer(root, max_epochs=max_epochs, max_steps=max_steps, enable_checkpointing=True,
                           callbacks=[*callbacks, ModelCheckpoint(dirpath=root / "ckpt", save_last=True, every_n_epochs=1)])
    trainer.fit(model, datamodule=tiny_datamodule(100), ckpt_path=ckpt_path)
    return model


def test_secret_mode_is_the_default_key_kept_on_the_private_side_never_in_the_checkpoint(tmp_path, capsys):
    model = _fit(tmp_path / "root", noise_multiplier=2.0)
    key_path = NoiseKeyStore(model.resolved_private_dir / "noise_keys").path(model.run_id)
    key = NoiseKeyStore.load_file(key_path)
    assert model.noise == "secret" and key is not None
    assert [r["noise_mode"] for r in model.noise_record] == ["secret", "secret"]
    assert {r["key_id"] for r in model.noise_record} == {key.key_id}
    assert (tmp_path / "root") not in key_path.parents
    for ckpt in (tmp_path / "root" / "ckpt").glob("*.ckpt"):
        raw = ckpt.read_bytes()
        assert key.secret not in raw and key.secret.hex().encode() not in raw
        state = torch.load(ckpt, weights_only=False)["private_evolution"]
        assert state["run_id"] == model.run_id and "noise_multiplier" not in state
    assert key.secret.hex() not in str(dict(model.hparams))


def test_noise_key_file_inside_the_output_root_is_refused(tmp_path):
    with pytest.raises(ValueError, match="noise_key_file .* is inside the output root"):
        _fit(tmp_path, noise_multiplier=2.0, noise_key_file=str(tmp_path / "k.key"))


def test_seeded_mode_warns_and_is_recorded(tmp_path, caplog):
    acc = PrivacyAccountant(epsilon=2.0)
    with pytest.warns(SeededNoiseWarning, match="ONLY while the seed stays secret"):
        model = _fit(tmp_path, callbacks=[acc], noise="seeded")
    assert [r["noise_mode"] for r in model.noise_record] == ["seeded", "seeded"]
    assert acc.noise_modes == ["seeded"]
    assert "SEEDED: private only while the seed stays secret" in caplog.text
    with pytest.raises(ValueError, match="noise must be one of"):
        tiny_model(noise="public")


def test_resume_reads_the_key_back_and_matches_an_uninterrupted_run(tmp_path):
    full = _fit(tmp_path / "full", noise_multiplier=2.0, iterations=3, variation_degrees=0.4, max_epochs=3,
                noise_key_file=shared_noise_key(tmp_path))
    first = _fit(tmp_path / "cut", noise_multiplier=2.0, iterations=3, variation_degrees=0.4, max_epochs=3, max_steps=1,
                 noise_key_file=shared_noise_key(tmp_path))
    assert first.iteration == 1
    resumed = _fit(tmp_path / "cut", noise_multiplier=2.0, iterations=3, variation_degrees=0.4, max_epochs=3,
                   noise_key_file=shared_noise_key(tmp_path), ckpt_path=str(tmp_path / "cut" / "ckpt" / "last.ckpt"))
    np.testing.assert_array_equal(resumed.population.images, full.population.images)
    assert resumed.noise_record == full.noise_record


def test_a_lost_key_on_resume_continues_with_a_fresh_recorded_key(tmp_path):
    acc = PrivacyAccountant(epsilon=2.0)
    first = _fit(tmp_path, callbacks=[acc], max_steps=1)
    NoiseKeyStore(first.resolved_private_dir / "noise_keys").path(first.run_id).unlink()
    acc2 = PrivacyAccountant(epsilon=2.0)
    with pytest.warns(NoiseKeyLostWarning, match="no longer bit-reproducible"):
        second = _fit(tmp_path, callbacks=[acc2], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    ids = [r["key_id"] for r in second.noise_record]
    assert len(ids) == 2 and ids[0] != ids[1] and second.run_id == first.run_id
    assert [n["key_id"] for n in acc2.noise_sources] == ids


# ------------------------------------------------------------------ no unaccounted spend
def test_resume_without_accountant_and_without_explicit_sigma_is_refused(tmp_path):
    _fit(tmp_path, callbacks=[PrivacyAccountant(epsilon=2.0)], max_steps=1)
    with pytest.raises(RuntimeError, match="noise_multiplier is not set"):
        _fit(tmp_path, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))


def test_resume_with_explicit_sigma_extends_the_modules_record(tmp_path):
    _fit(tmp_path, noise_multiplier=3.0, max_steps=1)
    resumed = _fit(tmp_path, noise_multiplier=2.5, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [r["noise_multiplier"] for r in resumed.noise_record] == [3.0, 2.5]


def test_an_unaccounted_checkpoint_is_accounted_from_the_record_when_resumed_with_an_accountant(tmp_path):
    _fit(tmp_path, noise_multiplier=3.0, max_steps=1)  # iteration 1 ran without an accountant
    acc = PrivacyAccountant(epsilon=5.0)
    model = _fit(tmp_path, callbacks=[acc], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    sigmas = [e["noise_multiplier"] for e in acc.ledger.entries]
    assert len(sigmas) == 2 and sigmas[0] == 3.0 and sigmas[1] == pytest.approx(model.noise_record[1]["noise_multiplier"])
    mu = (1 / 3.0**2 + 1 / sigmas[1] ** 2) ** 0.5
    assert acc.ledger.epsilon == pytest.approx(privacy.gdp_epsilon(mu=mu, delta=1e-5))
    assert acc.ledger.epsilon <= 5.0 * (1 + 1e-9)


def test_random_population_is_checkpointed_before_iteration_1(tmp_path):
    class Boom(Exception):
        pass

    class FailInIteration1(PrivacyAccountant):
        def on_train_epoch_start(self, trainer, pl_module):
            raise Boom("iteration 1 fails")

    with pytest.raises(Boom):
        _fit(tmp_path, callbacks=[FailInIteration1(epsilon=2.0)])
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert ckpt["private_evolution"]["iteration"] == 0 and ckpt["private_evolution"]["population"] is not None
    # Resuming samples nothing again: the RANDOM population comes from the checkpoint.
    resumed = _fit(tmp_path, callbacks=[PrivacyAccountant(epsilon=2.0)], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.iteration == 2
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt")) == ["epoch=1-step=2.ckpt", "last.ckpt"]


def test_the_public_seed_streams_refuse_to_make_the_dp_noise():
    from pe_lightning.seeding import make_generator

    with pytest.raises(ValueError, match="secret noise key"):
        make_generator(0, 1, "noise")


def test_an_embedding_cache_inside_the_output_root_is_refused(tmp_path):
    with pytest.raises(ValueError, match="private-embedding cache folder .* is inside the output root"):
        _fit(tmp_path, noise_multiplier=2.0, embedding_cache_dir=str(tmp_path / "cache"))
