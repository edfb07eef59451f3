"""The Private Evolution LightningModule: a thin adapter from Lightning hooks to the PE engine.

One epoch = one PE iteration (docs/design.md §3); :class:`pe_lightning.engine.PEEngine`
does the work. ``on_fit_start``: noise key, private embeddings, RANDOM population
(checkpointed before iteration 1). ``on_train_epoch_start``: lookahead. ``training_step``:
votes. ``on_train_epoch_end``: sigma from the run's noise-multiplier source (the
``PrivacyAccountant``) or the explicit one, the DP release, selection and variation.
Callbacks are found by the core's hook contract (:mod:`pe_lightning.engine.hooks`) and
read the run through :attr:`PrivateEvolution.run` (:mod:`pe_lightning.run_publishing`); the
checkpoint state and the run fingerprint are :mod:`pe_lightning.run_checkpoint`'s; the two
Lightning workarounds are in :mod:`pe_lightning.lightning_compat`.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from pe_lightning.apis.base import ImageAPI
from pe_lightning.atomic import check_writable
from pe_lightning.channels import check_channels
from pe_lightning.checkpoints import save_as_last
from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.embeddings.base import Embedding
from pe_lightning.engine.class_sizes import check_configured_counts, class_sizes, resolve_size_schedule
from pe_lightning.engine.core import PEEngine
from pe_lightning.engine.hooks import FixedNoiseMultiplier, NotPrivateWarning, require_noise_multiplier
from pe_lightning.engine.noise_keys import NoiseKeyLostWarning, recorded_secret_key_id
from pe_lightning.engine.scratch import ScratchSpace
from pe_lightning.engine.settings import EngineSettings
from pe_lightning.engine.sharding import ProcessGroupCollective
from pe_lightning.engine_attribute import EngineAttribute
from pe_lightning.evaluation import SavedRunEvaluation
from pe_lightning.lightning_compat import count_iteration_as_step, skip_ddp_wrapping
from pe_lightning.noise import NOISE_MODES, NoiseKey
from pe_lightning.private_policy import PrivateSidePolicy, check_private_data
from pe_lightning.resume import start_resumed
from pe_lightning.run_checkpoint import RunCheckpointing
from pe_lightning.run_identity import agree_run_id, resolve_output_dir
from pe_lightning.run_log import RunLog
from pe_lightning.run_publishing import RunPublishing
from pe_lightning.schedules import Schedule, resolve_schedule
from pe_lightning.validation import is_int

__all__ = ["PrivateEvolution", "NotPrivateWarning", "NoiseKeyLostWarning"]

# Nothing is trained by gradient: Lightning's "no optimizer" notice is expected, not a problem.
warnings.filterwarnings("ignore", message=r".*configure_optimizers.* returned `None`", category=UserWarning)


class PrivateEvolution(RunPublishing, RunCheckpointing, SavedRunEvaluation, pl.LightningModule):
    """Private Evolution as a LightningModule (settings checked by :class:`~pe_lightning.engine.EngineSettings`).

    Args:
        api: the foundation-model API (RANDOM and VARIATION).
        embedding: embedding used for voting (private and synthetic).
        iterations: ``T``, the number of PE iterations (= ``trainer.max_epochs``).
        num_samples_per_class: synthetic samples per class, an int or one per class
            (default 200). Public configuration: it must not come from private data.
        variation_degrees: the degree of each iteration: one value, a list of ``T``, or
            ``{start: a, end: b}`` / ``{points: [...]}`` interpolated over ``T``
            (:mod:`pe_lightning.schedules`); checked by ``api.validate_degree``.
        lookahead_degree: ``k``, variations averaged per synthetic embedding (0: none).
        threshold: ``H``, subtracted from the noisy counts (then clipped at 0).
        num_nearest_neighbors: votes per private sample, each weighing ``1/sqrt(k')``
            (L2 sensitivity stays 1).
        noise_multiplier: ``sigma``, the noise std per bin. ``None``: stated by the run's
            ``PrivacyAccountant`` before each release (the run refuses to start without
            one). ``0`` means *not private* and is warned about.
        search_backend: ``'auto'``, ``'faiss'`` or ``'torch'``.
        distance: the votes' criterion: ``"l2"`` (the paper), ``"cosine"`` or ``"ip"``;
            the sensitivity is unchanged.
        selection: how parents are chosen from the thresholded noisy counts: a strategy
            of :mod:`pe_lightning.engine.selection` (``"sample"``, the paper's, by default).
            Post-processing.
        variations_per_parent: children of each selected parent (post-processing).
        keep_selected: the selected parents stay beside their children (post-processing);
            each class of ``n_c`` samples selects ``n_c / (variations_per_parent + keep_selected)``.
        num_samples_schedule: samples per class at iterations ``0 .. T`` (``T + 1``
            entries; 0 is the RANDOM population) or ``{start: a, end: b}``, instead of
            ``num_samples_per_class``. Public configuration.
        privacy_unit: ``"sample"`` (neighbours differ by one image) or ``"client"`` (by one
            client with all its images; needs ``private_clients``): each client's vote
            vector is scaled to L2 norm 1, so the sensitivity stays 1 per client.
        counts_from_private_labels: opt-in: class sizes ∝ the *private* label counts. This
            leaks the label distribution outside the DP guarantee and is warned about.
        seed: seeds every random stream except the DP noise (RANDOM, lookahead,
            selection, variation: public or post-processing). The seed is public.
        noise: ``"secret"`` (default): the DP noise is keyed by 256 bits from the OS CSPRNG,
            kept on the private side (never in the output root, checkpoints or logs) and
            read back on resume. ``"seeded"``: derived from ``seed``, for reproducible tests;
            private ONLY while the seed stays secret (warned, recorded in the ledger).
        noise_key_file: the secret key's file (default ``<private_state_dir>/noise_keys/<run id>.key``);
            the same file for two runs draws the same noise. Not inside the output root.
        private_state_dir: the private-side folder for noise keys and the private-embedding
            cache (default ``$PE_LIGHTNING_PRIVATE_DIR`` or ``$XDG_CACHE_HOME/pe_lightning``).
        api_batch_size: images per API call (and the sharding chunk).
        embedding_batch_size: images per embedding forward pass.
        output_dir: where the final population is written (default: the output root
            ``trainer.default_root_dir``); checked for writability before any spend.
        save_png: also write the final population as a PNG tree.
        reuse_lookahead: the next population takes the selected parents' lookahead
            variations (fresh ones only past ``k`` selections): post-processing that saves
            up to ``N`` of the ``(k + 1) N`` API calls per iteration
            (:mod:`pe_lightning.engine.reuse`); ``False`` is the reference's behaviour.
        overlap_lookahead_embedding: with an embedding on the CPU, embed each lookahead variation
            on a background thread while the API makes the next (at most one pending;
            :mod:`pe_lightning.engine.lookahead_mean`): the same numbers, less wall time when a core
            is free for it. ``None`` (default): when the process has more cores than torch's
            intra-op threads; ``True``: always; ``False``: in turn. Overlapped,
            ``time/embedding_s`` holds the waits and ``time/embedding_overlapped_s`` the background embedding.
        cache_private_embeddings: keep the private embeddings on disk, keyed by the data's
            and the embedding's fingerprints.
        embedding_cache_dir: that cache's folder (default ``<private_state_dir>/embedding_cache``);
            it is derived from the private images: never in the output root.
        population_path: a saved ``population.npz`` for ``python -m pe_lightning test``.
        spill_to_disk_mb: arrays larger than this are memory-mapped under
            ``<output_dir>/.scratch``; ``None`` keeps everything in memory.
        tone_share: the tone release (:mod:`pe_lightning.engine.tone`): the last iteration's
            Gaussian mechanism also carries a histogram of the private images' peak gray levels,
            with this share of its ``1 / sigma^2`` (the votes keep ``1 - tone_share``: their noise
            is ``sigma / sqrt(1 - tone_share)``); the final population's peaks are then matched
            to the released histogram (post-processing). Same mechanism, same accounting;
            ``0`` (default): no tone release. Sample-level DP only.
        tone_bins: the peak-level histogram's bins over 0..255 (a divisor of 256).
        accept_changed_resume: resume from a checkpoint whose data module, size schedule,
            privacy unit, embedding or API differ from this run's (refused otherwise,
            :mod:`pe_lightning.run_fingerprint`); each difference is noted in the ledger.
    """

    # Run state (kept by the engine) and configuration (its settings), readable here.
    population = EngineAttribute()
    iteration = EngineAttribute()
    sizes_per_iteration = EngineAttribute()
    noise_record = EngineAttribute()
    iterations = EngineAttribute(settings=True)
    lookahead_degree = EngineAttribute(settings=True)
    threshold = EngineAttribute(settings=True)
    num_nearest_neighbors = EngineAttribute(settings=True)
    seed = EngineAttribute(settings=True)

    def __init__(
        self,
        *,
        api: ImageAPI,
        embedding: Embedding,
        iterations: int,
        num_samples_per_class: int | list[int] | None = None,
        variation_degrees: Schedule = 0.5,
        lookahead_degree: int = 8,
        threshold: float = 0.0,
        num_nearest_neighbors: int = 1,
        noise_multiplier: float | None = None,
        search_backend: str = "auto",
        distance: str = "l2",
        selection: str = "sample",
        variations_per_parent: int = 1,
        keep_selected: bool = False,
        num_samples_schedule: list[int] | dict[str, float] | None = None,
        privacy_unit: str = "sample",
        counts_from_private_labels: bool = False,
        seed: int = 0,
        noise: str = "secret",
        noise_key_file: str | None = None,
        private_state_dir: str | None = None,
        api_batch_size: int = 4096,
        embedding_batch_size: int = 2048,
        output_dir: str | None = None,
        save_png: bool = True,
        reuse_lookahead: bool = True,
        overlap_lookahead_embedding: bool | None = None,
        cache_private_embeddings: bool = True,
        embedding_cache_dir: str | None = None,
        spill_to_disk_mb: float | None = 1024.0,
        population_path: str | None = None,
        tone_share: float = 0.0,
        tone_bins: int = 32,
        accept_changed_resume: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(api, ImageAPI):
            raise TypeError(f"api must be an ImageAPI, got {type(api).__name__}")
        if not isinstance(embedding, Embedding):
            raise TypeError(f"embedding must be an Embedding, got {type(embedding).__name__}")
        if not (is_int(iterations) and iterations >= 1):
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        settings = EngineSettings(
            iterations=iterations,
            variation_degrees=tuple(resolve_schedule("variation_degrees", variation_degrees, iterations=iterations)),
            lookahead_degree=lookahead_degree, threshold=float(threshold), num_nearest_neighbors=num_nearest_neighbors,
            search_backend=search_backend, distance=distance, selection=selection,
            variations_per_parent=variations_per_parent, keep_selected=bool(keep_selected), privacy_unit=privacy_unit,
            seed=seed, api_batch_size=api_batch_size, embedding_batch_size=embedding_batch_size,
            reuse_lookahead=reuse_lookahead, overlap_lookahead_embedding=overlap_lookahead_embedding,
            tone_share=tone_share, tone_bins=tone_bins,
        )
        settings.check_api(api)
        self._configured_counts = check_configured_counts(num_samples_per_class, num_samples_schedule)
        if noise_multiplier is not None:
            FixedNoiseMultiplier(noise_multiplier)  # checks it
        if spill_to_disk_mb is not None and not (math.isfinite(spill_to_disk_mb) and spill_to_disk_mb >= 0):
            raise ValueError(f"spill_to_disk_mb must be None or a finite number >= 0, got {spill_to_disk_mb}")
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
        self._size_schedule = resolve_size_schedule(num_samples_schedule, iterations)

        self.save_hyperparameters(ignore=["api", "embedding"])
        self.automatic_optimization = False
        self.api = api
        self.embedding = embedding
        self.engine = PEEngine(settings=settings, api=api, embedding=embedding)
        self._noise_multiplier = noise_multiplier
        self.counts_from_private_labels = counts_from_private_labels
        self.noise = noise
        self.private_policy = PrivateSidePolicy(private_state_dir=private_state_dir, noise_key_file=noise_key_file,
                                              cache_private_embeddings=cache_private_embeddings,
                                              embedding_cache_dir=embedding_cache_dir)
        self.output_dir = output_dir
        self.save_png = save_png
        self.spill_to_disk_mb = spill_to_disk_mb
        self.population_path = population_path
        self.accept_changed_resume = accept_changed_resume
        self._accepted_changes: list[str] = []  # fingerprint differences accepted on resume, noted in on_fit_start
        self.final_population_dir: Path | None = None
        self.run_id: str | None = None  # public, random; names the run's key file
        self._noise_key: NoiseKey | None = None
        self._next_sigma: float | None = None  # stated by the run's noise-multiplier source for the next release
        self._log = RunLog()  # metrics queued and sent, outputs written (public)
        self._iteration_start = 0.0
        self._classes: tuple[list[str], list[list[int]]] | None = None  # class names and sizes, from setup

    # ------------------------------------------------------------------ set-up
    def configure_optimizers(self):  # noqa: D102 - nothing is trained by gradient
        return None

    def configure_model(self) -> None:  # noqa: D102 - see pe_lightning.lightning_compat
        skip_ddp_wrapping(self.trainer.strategy)

    def _datamodule(self) -> PrivateImageDataModule:
        dm = getattr(self.trainer, "datamodule", None)
        if not isinstance(dm, PrivateImageDataModule):
            raise TypeError(
                "PrivateEvolution needs a PrivateImageDataModule passed as trainer.fit(model, datamodule=...); "
                f"got {type(dm).__name__}"
            )
        return dm

    def setup(self, stage: str) -> None:
        if stage == "test":
            self._setup_evaluation()
            return
        if stage != "fit":
            return
        if self.trainer.max_epochs != self.iterations:
            raise ValueError(
                f"trainer.max_epochs ({self.trainer.max_epochs}) must equal model iterations ({self.iterations}): "
                "one epoch is one PE iteration"
            )
        dm = self._datamodule()
        dm.setup("fit")
        check_channels(api=self.api, data=dm)
        class_names = list(dm.class_names)
        present = check_private_data(dm, class_names=class_names, privacy_unit=self.engine.settings.privacy_unit)
        sizes = class_sizes(
            configured=self._configured_counts, schedule=self._size_schedule, iterations=self.iterations,
            class_names=class_names, private_label_counts=present if self.counts_from_private_labels else None,
            num_nearest_neighbors=self.num_nearest_neighbors, fold=self.engine.settings.fold,
        )
        self._classes = (class_names, sizes)
        check_writable(self.resolved_output_dir, field="output_dir", tag=f"{self.global_rank}-")  # before any spend

    def on_fit_start(self) -> None:
        require_noise_multiplier(self.stated_noise_multiplier(), info=rank_zero_info)
        start_resumed(self.trainer, accepted_changes=self._accepted_changes, info=rank_zero_info)
        self._accepted_changes = []
        if self.population is not None and self.iteration >= self.iterations:  # resumed a finished run
            self.engine.class_names, self.engine.sizes_per_iteration = self._classes  # no prepare: nothing to run
            return self.on_train_end()  # its final stage, if a kill or a full disk cut it short
        collective = ProcessGroupCollective()
        self._setup_noise_key(collective)  # before any heavy work: a key file in the wrong place fails fast
        self._iteration_start = time.perf_counter()
        dm = self._datamodule()
        class_names, sizes = self._classes
        fresh = self.engine.prepare(  # each private image is embedded once per run (or read from the cache)
            class_names=class_names, sizes_per_iteration=sizes, private_images=dm.private_images,
            private_labels=dm.private_labels,
            private_clients=dm.private_clients if self.engine.settings.privacy_unit == "client" else None,
            scratch=ScratchSpace.for_run(self.resolved_output_dir, spill_to_disk_mb=self.spill_to_disk_mb),
            device=self.device, collective=collective, report=self._report_stage,
            cache=self.private_policy.embedding_cache(output_roots=self._output_roots()), data_fingerprint=dm.fingerprint,
            info=rank_zero_info,
        )
        if fresh:  # else resumed from a checkpoint: the set-up time belongs to no iteration (prepare dropped it)
            self._publish_population(iteration=0)
            for path in save_as_last(self.trainer):  # a failure in iteration 1 never loses the sampling
                rank_zero_info(f"[PE] RANDOM population (iteration 0) checkpointed to {path}")

    # ------------------------------------------------------------ the private side
    @property
    def resolved_private_dir(self) -> Path:
        """``private_state_dir``, or the per-user default outside the output root."""
        return self.private_policy.private_dir

    def _output_roots(self) -> list:
        return [self.trainer.default_root_dir, self.resolved_output_dir]

    def _setup_noise_key(self, collective: ProcessGroupCollective) -> None:
        """The run id (public) and the noise key (:meth:`~pe_lightning.private_policy.PrivateSidePolicy.noise_key`)."""
        self.run_id = agree_run_id(self.run_id, collective=collective)
        self._noise_key = self.private_policy.noise_key(
            mode=self.noise, seed=self.seed, run_id=self.run_id, recorded_key_id=recorded_secret_key_id(self.noise_record),
            output_roots=self._output_roots(), check_location=self.trainer.is_global_zero, collective=collective,
            info=rank_zero_info)

    # ---------------------------------------------------------------- the loop
    def on_train_epoch_start(self) -> None:
        if self.iteration != self.current_epoch:
            raise RuntimeError(f"PE iteration counter ({self.iteration}) and epoch ({self.current_epoch}) disagree")
        self._iteration_start = time.perf_counter()
        self.engine.begin_iteration()

    def training_step(self, batch, batch_idx: int) -> None:
        (indices,) = batch if isinstance(batch, (list, tuple)) else (batch,)
        self.engine.vote(indices)
        self._report_stage("voting", batch_idx + 1, self.trainer.num_training_batches)
        return None

    def gather_assignments(self) -> torch.Tensor:
        """Votes of all private samples, combined across ranks (collective: every rank calls it)."""
        return self.engine.gather_assignments()

    def on_train_epoch_end(self) -> None:
        sigma = self.stated_noise_multiplier()
        self.log_iteration_metrics(self.engine.evolve(noise_multiplier=sigma, key=self._noise_key))
        count_iteration_as_step(self.trainer)
        self._publish_population(iteration=self.iteration)

    @property
    def resolved_output_dir(self) -> Path:
        """``output_dir``, or the output root ``trainer.default_root_dir`` when unset."""
        return resolve_output_dir(self.output_dir, default_root_dir=self.trainer.default_root_dir)

    def on_train_end(self) -> None:
        self.final_population_dir = self.resolved_output_dir / "final"
        if self.trainer.is_global_zero:
            for line in self.engine.save_final(self.final_population_dir, png=self.save_png):
                rank_zero_info(line)

    def teardown(self, stage: str) -> None:
        self.engine.close()  # scratch files are working state
