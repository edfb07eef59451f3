"""Small builders shared by the tests (tiny, fast, offline)."""

from __future__ import annotations

import lightning.pytorch as pl

from pe_lightning import DrawText, MNISTDataModule, PixelEmbedding, PrivateEvolution


def tiny_datamodule(num_private: int = 200, **kwargs) -> MNISTDataModule:
    return MNISTDataModule(num_private=num_private, **kwargs)


def tiny_model(**overrides) -> PrivateEvolution:
    kwargs = dict(
        api=DrawText(image_size=28),
        embedding=PixelEmbedding(size=14),
        iterations=2,
        num_samples_per_class=8,
        variation_degrees=[0.5, 0.3],
        lookahead_degree=2,
        threshold=0.0,
        seed=0,
        save_png=False,
    )
    kwargs.update(overrides)
    return PrivateEvolution(**kwargs)


def tiny_trainer(tmp_path, *, max_epochs: int = 2, callbacks=(), **kwargs) -> pl.Trainer:
    defaults = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    defaults.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **defaults)
