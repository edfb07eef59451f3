"""The Private Evolution LightningModule: one epoch = one PE iteration (DESIGN.md section 2).

Per iteration ``t`` (epoch ``t - 1``):

* ``on_train_epoch_start``: lookahead. Each synthetic sample's embedding is the mean
  embedding of ``lookahead_degree`` variations of it (or of itself when 0).
* ``training_step``: each batch of private sample indices votes for the nearest
  synthetic sample of its class; the vote is stored per private index.
* ``on_train_epoch_end``: votes are gathered across ranks, the histogram (L2
  sensitivity 1) gets Gaussian noise with std ``noise_multiplier`` keyed by the run's
  secret noise key (:mod:`pe_lightning.noise`; identical on every rank), is
  thresholded, parents are drawn ∝ the noisy counts within each class, and their
  variations are the new population. Only the histogram touches private data; the rest
  is post-processing (:mod:`pe_lightning.release`).

The population is checkpoint state; each completed iteration also counts as one
optimizer-free *step*, so ``ModelCheckpoint`` saves and ``max_steps`` stops as usual. The
RANDOM population is checkpointed too (before iteration 1), so a failure in the first
iteration never loses the sampling.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.distributed import gather_objects, my_chunks
from pe_lightning.embedding_cache import EmbeddingCache
from pe_lightning.embeddings.base import Embedding
from pe_lightning.lookahead_store import LookaheadStore
from pe_lightning.noise import NOISE_MODES, NoiseKey, NoiseKeyStore, seeded_noise_warning
from pe_lightning.population import Population
from pe_lightning.private_dir import resolve_private_dir
from pe_lightning.release import combine_assignments, release_votes
from pe_lightning.schedules import Schedule, resolve_schedule
from pe_lightning.seeding import make_generator
from pe_lightning.storage import ScratchSpace
from pe_lightning.voting import SELECTION_MODES, assign_votes, check_distance, resolve_backend, select_parents

__all__ = ["PrivateEvolution", "NotPrivateWarning", "NoiseKeyLostWarning"]

# Nothing is trained by gradient: Lightning's "no optimizer" notice is expected, not a problem.
warnings.filterwarnings("ignore", message=r".*configure_optimizers.* returned `None`", category=UserWarning)


class NotPrivateWarning(UserWarning):
    """The run uses ``noise_multiplier=0``: its output has no privacy guarantee."""


class NoiseKeyLostWarning(UserWarning):
    """A resumed run could not read its noise key: it goes on with a fresh (still secret) key."""


def _as_slice(indices: torch.Tensor) -> slice | None:
    """``slice(a, b)`` when ``indices`` is exactly ``a, a + 1, ..., b - 1``, else ``None``."""
    n = indices.numel()
    if indices.ndim != 1 or n == 0:
        return None
    first, last = int(indices[0]), int(indices[-1])
    if last - first + 1 != n or (n > 1 and not bool((indices[1:] - indices[:-1] == 1).all())):
        return None
    return slice(first, last + 1)


class PrivateEvolution(pl.LightningModule):
    """Private Evolution as a LightningModule.

    Args:
        api: the foundation-model API (RANDOM and VARIATION).
        embedding: embedding used for voting (private and synthetic).
        iterations: ``T``, the number of PE iterations (= ``trainer.max_epochs``).
        num_samples_per_class: synthetic samples per class, an int (uniform) or one per
            class (default 200). Public configuration: it must not come from private data.
        variation_degrees: the variation degree of each iteration: one value for all, a
            list of length ``T``, or ``{start: a, end: b}`` / ``{points: [...]}``
            interpolated over the ``T`` iterations (:mod:`pe_lightning.schedules`, so that
            changing ``iterations`` needs no other change); ranges are checked by
            ``api.validate_degree``.
        lookahead_degree: ``k``, variations averaged per synthetic embedding (0: none).
        threshold: ``H``, subtracted from the noisy counts (then clipped at 0).
        num_nearest_neighbors: votes per private sample, each weighing ``1/sqrt(k')``
            (L2 sensitivity stays 1).
        noise_multiplier: ``sigma``, the noise std per histogram bin. ``None`` means
            "set by calibration" (the ``PrivacyAccountant`` callback); the run refuses
            to start while it is ``None``. ``0`` means *not private* and is warned about.
        search_backend: ``'auto'``, ``'faiss'`` or ``'torch'``.
        distance: the nearest-neighbour criterion of the votes: ``"l2"`` (the paper),
            ``"cosine"`` or ``"ip"`` (inner product). Each private sample still casts
            ``num_nearest_neighbors`` votes, so the sensitivity is unchanged.
        selection: how parents are chosen from the thresholded noisy counts of each class:
            ``"sample"`` (with replacement, ∝ the counts; the paper) or ``"rank"`` (the
            largest counts, each parent once). Post-processing of the noisy histogram.
        variations_per_parent: children (variations) of each selected parent. Public
            configuration (post-processing).
        keep_selected: the selected parents stay in the next population beside their
            children (the reference library's ``keep_selected``). Post-processing.
            With these two, each class of ``n_c`` samples selects
            ``n_c / (variations_per_parent + keep_selected)`` parents (must divide).
        num_samples_schedule: synthetic samples per class at iterations ``0 .. T``
            (``T + 1`` entries; iteration 0 is the RANDOM population), or
            ``{start: a, end: b}`` interpolated over them (rounded), instead of a constant
            ``num_samples_per_class`` (set one of the two). Public
            configuration: e.g. a large RANDOM population and fewer, higher-count bins
            later, like the reference's ``num_samples_schedule``.
        privacy_unit: ``"sample"`` (default: neighbours differ by one private image) or
            ``"client"`` (by one client with all its images; the data module must give
            ``private_clients``): each client's votes are scaled so its vote vector has L2
            norm 1, so the histogram keeps sensitivity 1 per client.
        counts_from_private_labels: opt-in: split the total synthetic count across
            classes ∝ the *private* label counts. This leaks the label distribution
            outside the DP guarantee and is warned about.
        seed: seeds every random stream except the DP noise (via
            :func:`pe_lightning.seeding.make_generator`): RANDOM, lookahead, selection and
            variation are public or post-processing. The seed is public (it is in the
            config, the checkpoint and the logs).
        noise: where the DP Gaussian noise comes from. ``"secret"`` (default): a 256-bit
            key from the operating system's CSPRNG, created at the run's first start and
            kept on the private side (``noise_key_file``), never in the output root,
            checkpoints, hyperparameters or logs; a resumed run reads it back, so
            kill-and-resume stays identical. ``"seeded"``: derived from ``seed`` for
            bit-reproducible tests and artefacts; the output is then private ONLY while
            the seed stays secret (warned loudly, recorded in the ledger).
        noise_key_file: the secret key's file (default:
            ``<private_state_dir>/noise_keys/<run id>.key``). Give the same file to two runs to
            draw the same noise (e.g. to compare 1 and 2 processes). Must not be inside
            the output root.
        private_state_dir: the private-side folder for the noise keys and the private-embedding
            cache (default: :func:`pe_lightning.private_dir.default_private_dir`, i.e.
            ``$PE_LIGHTNING_PRIVATE_DIR`` or ``$XDG_CACHE_HOME/pe_lightning``), outside
            the output root that users share.
        api_batch_size: images per API call.
        embedding_batch_size: images per embedding forward pass.
        output_dir: where the final population is written (default:
            ``trainer.default_root_dir``, the output root). Checked for writability at set-up,
            before any privacy is spent.
        save_png: also write the final population as a PNG tree.
        reuse_lookahead: build the next population from the lookahead variations already
            made for each selected parent (its ``m``-th selection takes its ``m``-th
            lookahead variation; fresh variations only when a parent is selected more than
            ``lookahead_degree`` times). The lookahead variations are drawn from the
            previous (already private) population and chosen by the noisy histogram, so
            this is post-processing: the privacy guarantee is unchanged. It saves up to
            ``N`` of the ``(k + 1) N`` API calls per iteration, at the same quality on the
            MNIST protocol (README); ``False`` is the reference implementation's behaviour.
        cache_private_embeddings: keep the private embeddings on disk, keyed by the
            private data's and the embedding's fingerprints, so a later run on the same
            data with the same embedding skips embedding them.
        embedding_cache_dir: folder of that cache (default:
            ``<private_state_dir>/embedding_cache``). It holds data derived from the private
            images (with pixel embeddings, the images themselves): keep it where the
            private data may live, never in the output root.
        population_path: a saved ``population.npz`` to evaluate with
            ``python -m pe_lightning test`` (instead of ``--ckpt_path`` of a PE checkpoint);
            not used by ``fit``.
        spill_to_disk_mb: arrays larger than this (population images, lookahead
            variations) are memory-mapped files under ``<output_dir>/.scratch`` instead of
            RAM; ``None`` keeps everything in memory.
    """

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
        cache_private_embeddings: bool = True,
        embedding_cache_dir: str | None = None,
        spill_to_disk_mb: float | None = 1024.0,
        population_path: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(api, ImageAPI):
            raise TypeError(f"api must be an ImageAPI, got {type(api).__name__}")
        if not isinstance(embedding, Embedding):
            raise TypeError(f"embedding must be an Embedding, got {type(embedding).__name__}")
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        self.variation_degrees = resolve_schedule("variation_degrees", variation_degrees, iterations=iterations)
        for t, d in enumerate(self.variation_degrees, start=1):
            try:
                api.validate_degree(d)
            except ValueError as err:
                raise ValueError(f"variation_degrees[{t - 1}] (iteration {t}): {err}") from err
        if num_samples_per_class is not None and num_samples_schedule is not None:
            raise ValueError("set num_samples_per_class or num_samples_schedule, not both")
        per_class = 200 if num_samples_per_class is None else num_samples_per_class
        counts = [per_class] if isinstance(per_class, int) else list(per_class)
        if not counts or any((not isinstance(c, int)) or c < 1 for c in counts):
            raise ValueError(f"num_samples_per_class must be an int >= 1 or a list of ints >= 1, got {num_samples_per_class!r}")
        if lookahead_degree < 0:
            raise ValueError(f"lookahead_degree must be >= 0, got {lookahead_degree}")
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
        if num_nearest_neighbors < 1:
            raise ValueError(f"num_nearest_neighbors must be >= 1, got {num_nearest_neighbors}")
        if noise_multiplier is not None and not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be None, 0 (not private) or > 0, got {noise_multiplier}")
        if min(api_batch_size, embedding_batch_size) < 1:
            raise ValueError("api_batch_size and embedding_batch_size must be >= 1")
        if spill_to_disk_mb is not None and not (math.isfinite(spill_to_disk_mb) and spill_to_disk_mb >= 0):
            raise ValueError(f"spill_to_disk_mb must be None or a finite number >= 0, got {spill_to_disk_mb}")
        resolve_backend(search_backend)
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
        check_distance(distance)
        if selection not in SELECTION_MODES:
            raise ValueError(f"selection must be one of {SELECTION_MODES}, got {selection!r}")
        if not isinstance(variations_per_parent, int) or isinstance(variations_per_parent, bool) or variations_per_parent < 0:
            raise ValueError(f"variations_per_parent must be an integer >= 0, got {variations_per_parent!r}")
        if variations_per_parent == 0 and not keep_selected:
            raise ValueError("variations_per_parent=0 needs keep_selected=True, or the next population would be empty")
        if privacy_unit not in ("sample", "client"):
            raise ValueError(f"privacy_unit must be 'sample' or 'client', got {privacy_unit!r}")
        self._size_schedule = self._resolve_size_schedule(num_samples_schedule, iterations)

        self.save_hyperparameters(ignore=["api", "embedding"])
        self.automatic_optimization = False
        self.api = api
        self.embedding = embedding
        self.iterations = iterations
        self._configured_counts = counts
        self.lookahead_degree = lookahead_degree
        self.threshold = float(threshold)
        self.num_nearest_neighbors = num_nearest_neighbors
        self.noise_multiplier = noise_multiplier
        self.search_backend = search_backend
        self.distance = distance
        self.selection = selection
        self.variations_per_parent = variations_per_parent
        self.keep_selected = bool(keep_selected)
        self.privacy_unit = privacy_unit
        self.counts_from_private_labels = counts_from_private_labels
        self.seed = seed
        self.noise = noise
        self.noise_key_file = noise_key_file
        self.private_state_dir = private_state_dir
        self.api_batch_size = api_batch_size
        self.embedding_batch_size = embedding_batch_size
        self.output_dir = output_dir
        self.save_png = save_png
        self.reuse_lookahead = reuse_lookahead
        self.cache_private_embeddings = cache_private_embeddings
        self.embedding_cache_dir = embedding_cache_dir
        self.spill_to_disk_mb = spill_to_disk_mb
        self.population_path = population_path

        self.population: Population | None = None
        self.iteration = 0  # number of completed PE iterations
        self.class_names: list[str] = []
        self.num_per_class: list[int] = []
        self.final_population_dir: Path | None = None
        self.run_id: str | None = None  # public, random; names the run's key file
        self.noise_record: list[dict] = []  # per iteration: sigma used, noise mode, public key id
        self._noise_key: NoiseKey | None = None
        self._private_embeddings: torch.Tensor | None = None
        self._private_labels: torch.Tensor | None = None
        self._private_clients: torch.Tensor | None = None
        self.sizes_per_iteration: list[list[int]] = []  # per class, at iterations 0 .. T
        self._synthetic_embeddings: torch.Tensor | None = None
        self._synthetic_labels: torch.Tensor | None = None
        self._assignments: torch.Tensor | None = None
        self._lookahead: LookaheadStore | None = None  # this rank's lookahead variations (reuse only)
        self._embedding_buffer: np.ndarray | None = None  # (N, D) float32, reused every iteration
        self._scratch: ScratchSpace | None = None
        self._pending_metrics: dict[str, float] = {}
        self._iteration_start = 0.0
        self._timings: dict[str, float] = defaultdict(float)

    @staticmethod
    def _resolve_size_schedule(schedule, iterations: int) -> list[int] | None:
        if schedule is None:
            return None
        if isinstance(schedule, (list, tuple)) and len(schedule) != iterations + 1:
            raise ValueError(
                f"num_samples_schedule must have one entry per iteration 0 .. T (T + 1 = {iterations + 1} entries; "
                f"iteration 0 is the RANDOM population), got {len(schedule)}"
            )
        values = resolve_schedule("num_samples_schedule", schedule, iterations=iterations + 1)
        sizes = [int(round(v)) for v in values]
        if any(n < 1 for n in sizes):
            raise ValueError(f"num_samples_schedule entries must be >= 1, got {sizes}")
        return sizes

    def _parents_per_class(self, iteration: int) -> list[int]:
        """Parents to select per class in ``iteration`` (1-based): the next sizes / (variations + kept)."""
        fold = self.variations_per_parent + int(self.keep_selected)
        return [n // fold for n in self.sizes_per_iteration[iteration]]

    # ------------------------------------------------------------------ set-up
    def configure_optimizers(self):  # noqa: D102 - nothing is trained by gradient
        return None

    def configure_model(self) -> None:
        # PE trains no parameters, so DistributedDataParallel (a gradient all-reduce) has
        # nothing to do and refuses the module. Under ``strategy="ddp"`` the process group,
        # launch and sampler stay Lightning's; the module is just not wrapped. Its cross-rank
        # exchanges (votes, generated chunks) are explicit collectives.
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy):
            strategy.configure_ddp = lambda: None

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
        trainer = self.trainer
        if trainer.max_epochs != self.iterations:
            raise ValueError(
                f"trainer.max_epochs ({trainer.max_epochs}) must equal model iterations ({self.iterations}): "
                "one epoch is one PE iteration"
            )
        dm = self._datamodule()
        dm.setup("fit")
        self.class_names = list(dm.class_names)
        num_classes = len(self.class_names)
        present = np.bincount(dm.private_labels, minlength=num_classes)
        empty = [self.class_names[c] for c in range(num_classes) if present[c] == 0]
        if empty:
            raise ValueError(
                f"classes {empty} have no private samples; remove them from the data module's classes "
                "(PE cannot evolve a class nobody votes for)"
            )
        counts = self._configured_counts
        if len(counts) == 1:
            counts = counts * num_classes
        if len(counts) != num_classes:
            raise ValueError(
                f"num_samples_per_class has {len(counts)} entries but the data has {num_classes} classes {self.class_names}"
            )
        if self.counts_from_private_labels:
            rank_zero_warn(
                "counts_from_private_labels=True: synthetic class sizes follow the PRIVATE label counts. "
                "This leaks the private label distribution and is NOT covered by the DP guarantee.",
                category=UserWarning,
            )
            total = sum(counts)
            exact = present / present.sum() * total
            counts = np.floor(exact).astype(int)
            for c in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
                counts[c] += 1
            counts = [max(int(c), 1) for c in counts]
        self.num_per_class = [int(c) for c in counts]
        if self._size_schedule is not None:
            if self.counts_from_private_labels:
                raise ValueError("num_samples_schedule and counts_from_private_labels cannot be combined")
            self.sizes_per_iteration = [[n] * num_classes for n in self._size_schedule]
        else:
            self.sizes_per_iteration = [list(self.num_per_class) for _ in range(self.iterations + 1)]
        self.num_per_class = list(self.sizes_per_iteration[0])
        self._check_output_dir_writable()
        fold = self.variations_per_parent + int(self.keep_selected)
        for t, sizes in enumerate(self.sizes_per_iteration):
            for name, n in zip(self.class_names, sizes):
                if n < self.num_nearest_neighbors:
                    raise ValueError(
                        f"class {name!r} gets {n} synthetic samples at iteration {t}, fewer than "
                        f"num_nearest_neighbors={self.num_nearest_neighbors}"
                    )
                if t > 0 and n % fold:
                    raise ValueError(
                        f"class {name!r} has {n} synthetic samples at iteration {t}, not a multiple of "
                        f"variations_per_parent + keep_selected = {fold}: each selected parent makes {fold} samples"
                    )
        if self.privacy_unit == "client" and getattr(dm, "private_clients", None) is None:
            raise ValueError(
                f"privacy_unit='client' needs client ids, but {type(dm).__name__} gives no private_clients "
                "(image folders: clients='subfolder' or a CSV; npz: a 'clients' array)"
            )

    def on_fit_start(self) -> None:
        if self.noise_multiplier is None:
            raise RuntimeError(
                "PrivateEvolution.noise_multiplier is not set. Add the PrivacyAccountant callback "
                "(pe_lightning.callbacks.PrivacyAccountant with epsilon and delta), which calibrates it, or set "
                "model.noise_multiplier explicitly (0 means NOT private)."
            )
        if self.noise_multiplier == 0:
            msg = "noise_multiplier=0: this run is NOT differentially private; its synthetic data may reveal private images."
            warnings.warn(msg, NotPrivateWarning, stacklevel=2)
            rank_zero_info("!" * 80 + "\n" + msg + "\n" + "!" * 80)
        self._setup_noise_key()  # before any heavy work: a key file in the wrong place fails fast
        self._iteration_start = time.perf_counter()
        dm = self._datamodule()
        limit = None if self.spill_to_disk_mb is None else int(self.spill_to_disk_mb * 2**20)
        self._scratch = ScratchSpace(directory=self.resolved_output_dir / ".scratch", limit_bytes=limit)
        self.api.setup(device=self.device, class_names=self.class_names)
        self.embedding.setup(device=self.device)
        # Each private image is embedded once per run (or read from the on-disk cache).
        self._private_embeddings = self._private_embedding(dm).to(self.device)
        self._private_labels = torch.from_numpy(dm.private_labels).to(self.device)
        if self.privacy_unit == "client":
            self._private_clients = torch.from_numpy(dm.private_clients)
        if self.population is None:
            labels = np.repeat(np.arange(len(self.num_per_class), dtype=np.int64), self.num_per_class)
            self.population = self._random(labels)
            self.iteration = 0
            self._publish_population(iteration=0)
            self._checkpoint_random_population()
        else:  # resumed from a checkpoint: the set-up time belongs to no iteration
            self._timings.clear()

    # ------------------------------------------------------------ evaluating a saved run
    def _setup_evaluation(self) -> None:
        dm = self._datamodule()
        dm.setup("test")
        self.class_names = list(dm.class_names)
        if self.population_path:
            self.population = Population.load_npz(self.population_path)
            self.iteration = self.iterations  # a saved final population
        if self.population is not None:
            self.population._check_class_names(self.class_names)

    def test_step(self, batch, batch_idx: int) -> None:  # noqa: D102 - nothing to do per batch
        return None

    def on_test_start(self) -> None:
        """Evaluate the restored population with the metric callbacks (FID, precision/recall, downstream).

        Nothing private is voted on and no privacy is spent: the population is the saved
        (already private) output. Callbacks that change a run (the accountant, grids,
        snapshots) are not called.
        """
        if self.population is None:
            raise RuntimeError(
                "nothing to evaluate: give a PE checkpoint (--ckpt_path <...>/last.ckpt) or a saved population "
                "(--model.init_args.population_path <...>/population.npz)"
            )
        evaluators = [cb for cb in self.trainer.callbacks if isinstance(cb, PopulationCallback) and cb.evaluates_saved_runs]
        if not evaluators:
            rank_zero_warn("python -m pe_lightning test: no metric callback (FIDCallback, PrecisionRecall, DownstreamEvaluation) to evaluate with")
        for cb in evaluators:
            cb.on_population(self.trainer, self, population=self.population, iteration=self.iteration)
        self._flush_metrics(
            {}, step=self.iteration,
            headline=f"[PE] evaluation of the population of iteration {self.iteration} ({len(self.population)} images)",
        )

    # ------------------------------------------------------------ the noise key
    @property
    def resolved_private_dir(self) -> Path:
        """``private_state_dir``, or the per-user default outside the output root."""
        return resolve_private_dir(self.private_state_dir)

    def _noise_key_path(self) -> Path:
        if self.noise_key_file:
            return Path(self.noise_key_file).expanduser()
        return NoiseKeyStore(self.resolved_private_dir / "noise_keys").path(self.run_id)

    def _setup_noise_key(self) -> None:
        """The run id (public) and the noise key: created on rank 0 at the first start, read back on resume.

        Rank 0 decides and broadcasts, so every rank draws the same noise even when the
        key file exists only on rank 0's machine.
        """
        strategy = self.trainer.strategy
        self.run_id = strategy.broadcast(self.run_id or secrets.token_hex(8), src=0)
        if self.noise == "seeded":
            self._noise_key = NoiseKey.from_seed(self.seed)
            msg = seeded_noise_warning(self.seed)
            rank_zero_info("!" * 80 + "\n" + msg + "\n" + "!" * 80)
            return
        secret = None
        if self.trainer.is_global_zero:
            path = self._noise_key_path()
            self._check_private_side(path, what="noise_key_file")
            key = NoiseKeyStore.load_file(path)
            expected = next((r["key_id"] for r in reversed(self.noise_record) if r["noise_mode"] == "secret"), None)
            if key is None:
                key = NoiseKey.generate()
                NoiseKeyStore.save_file(path, key)
                if expected is not None:
                    rank_zero_warn(
                        f"the noise key of run {self.run_id} ({path}) is missing: continuing with a fresh secret key "
                        f"({key.key_id}). The output stays private, but this run is no longer bit-reproducible "
                        "(an uninterrupted run would have drawn other noise); the ledger records the new key.",
                        category=NoiseKeyLostWarning,
                    )
                else:
                    rank_zero_info(f"[PE] new secret noise key {key.key_id} written to {path} (keep it private)")
            elif expected is not None and key.key_id != expected:
                rank_zero_warn(
                    f"{path} holds noise key {key.key_id}, not the key {expected} this run used so far: the output "
                    "stays private but is no longer bit-reproducible; the ledger records the new key.",
                    category=NoiseKeyLostWarning,
                )
            secret = key.secret
        self._noise_key = NoiseKey(secret=strategy.broadcast(secret, src=0), mode="secret")

    def _check_private_side(self, path: Path, *, what: str) -> None:
        """Refuse a secret or private-derived file inside the output root (what users share)."""
        resolved = path.resolve()
        for root in {Path(self.trainer.default_root_dir).resolve(), self.resolved_output_dir.resolve()}:
            if resolved == root or root in resolved.parents:
                raise ValueError(
                    f"{what} {str(path)!r} is inside the output root {str(root)!r}, which holds what is safe to share; "
                    "keep it on the private side (see private_state_dir)"
                )

    def _checkpoint_random_population(self) -> None:
        """Save the RANDOM population (iteration 0) where ``ModelCheckpoint`` keeps its ``last`` file.

        Sampling it can take millions of model evaluations; a failure in iteration 1 then
        resumes from here (``--ckpt_path last``) instead of sampling again.
        """
        for cb in self.trainer.checkpoint_callbacks:
            if not (isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath):
                continue
            path = cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST)
            # Claimed as the callback's own "last" file, so its next save replaces it
            # instead of writing last-v1.ckpt beside it.
            cb.last_model_path = path
            self.trainer.save_checkpoint(path, weights_only=False)
            rank_zero_info(f"[PE] RANDOM population (iteration 0) checkpointed to {path}")

    # -------------------------------------------------------------- API helpers
    @contextmanager
    def _timed(self, name: str):
        """Adds the wall time of the block to this iteration's ``time/<name>_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._timings[name] += time.perf_counter() - start

    def _embed(self, images: np.ndarray) -> torch.Tensor:
        with self._timed("embedding"):
            return self.embedding.embed(images, batch_size=self.embedding_batch_size).float()

    def _my_chunks(self, n: int):
        """This rank's ``(chunk index, slice)`` of ``range(n)``; chunks do not depend on the world size."""
        return my_chunks(n, self.api_batch_size, rank=self.global_rank, world_size=self.trainer.world_size)

    def _report_stage(self, stage: str, done: int, total: int) -> None:
        """Tell every :class:`PopulationCallback` how far ``stage`` of this iteration is (``on_stage``)."""
        for cb in self.trainer.callbacks:
            if isinstance(cb, PopulationCallback):
                cb.on_stage(self.trainer, self, stage=stage, done=done, total=total)

    def _reported_chunks(self, stage: str, n: int):
        """:meth:`_my_chunks`, reporting this rank's rows of ``stage`` done after each chunk."""
        chunks = list(self._my_chunks(n))
        total, done = sum(sl.stop - sl.start for _, sl in chunks), 0
        self._report_stage(stage, 0, total)
        for i, sl in chunks:
            yield i, sl
            done += sl.stop - sl.start
            self._report_stage(stage, done, total)

    def _gather(self, obj):
        with self._timed("gather"):
            return gather_objects(obj)

    def _private_embedding(self, dm: PrivateImageDataModule) -> torch.Tensor:
        """Private embeddings ``(N_private, D)``, computed sharded across ranks or read from the cache."""
        images = dm.private_images
        cache = key = None
        if self.cache_private_embeddings:
            folder = Path(self.embedding_cache_dir) if self.embedding_cache_dir else self.resolved_private_dir / "embedding_cache"
            self._check_private_side(folder, what="the private-embedding cache folder")
            cache = EmbeddingCache(folder)
            rank_zero_info(f"[PE] private-embedding cache (derived from private images; keep private): {folder}")
            key = EmbeddingCache.key(data_fingerprint=dm.fingerprint, embedding_fingerprint=self.embedding.fingerprint)
            cached = cache.load(key, num_rows=len(images))
            if all(self._gather(cached is not None)):  # every rank hit: use it
                rank_zero_info(f"[PE] private embeddings read from the cache {cache.path(key)}")
                return torch.from_numpy(cached)
        embeddings = self._sharded_rows(len(images), lambda i, sl: self._embed(images[sl]), stage="private embedding")
        self._check_finite(embeddings, what="private images", where="private indices")
        if cache is not None and self.trainer.is_global_zero:
            cache.save(key, embeddings.numpy())
        return embeddings

    def _sharded_rows(self, n: int, rows_of_chunk, *, buffer: bool = False, stage: str) -> torch.Tensor:
        """One float32 ``(n, D)`` tensor from ``rows_of_chunk(i, slice)`` computed for this rank's chunks.

        Each chunk's rows go straight into one array (no list of parts, no concatenation
        copy); under DDP the other ranks' chunks are gathered into it. With ``buffer`` the
        array is the module's per-iteration embedding buffer, allocated once and reused
        (the result is only valid until the next call with ``buffer``). ``stage`` names the
        work in the progress reports (:meth:`_report_stage`).
        """
        full: np.ndarray | None = None

        def allocate(dim: int) -> np.ndarray:
            if not buffer:
                return np.empty((n, dim), dtype=np.float32)
            if self._embedding_buffer is None or self._embedding_buffer.shape != (n, dim):
                self._embedding_buffer = np.empty((n, dim), dtype=np.float32)
            return self._embedding_buffer

        mine: list[slice] = []
        for i, sl in self._reported_chunks(stage, n):
            rows = rows_of_chunk(i, sl)
            if full is None:
                full = allocate(rows.shape[1])
            full[sl] = rows.numpy()
            mine.append(sl)
        if self.trainer.world_size > 1:
            for rank_parts in self._gather([(sl.start, sl.stop, full[sl]) for sl in mine]):
                for start, stop, part in rank_parts:
                    if full is None:
                        full = allocate(part.shape[1])
                    full[start:stop] = part
        return torch.from_numpy(full)

    def _check_finite(self, embeddings: torch.Tensor, *, what: str, where: str) -> None:
        """Raise naming the rows with NaN/inf.

        One float32 sum decides whether to look row by row: NaN/inf anywhere makes it
        non-finite; a finite-but-huge sum that overflows only costs the exact check.
        """
        if math.isfinite(float(embeddings.sum())) or torch.isfinite(embeddings).all():
            return
        bad = torch.nonzero(~torch.isfinite(embeddings).all(dim=1)).flatten()
        raise ValueError(
            f"the embedding {type(self.embedding).__name__} produced NaN/inf for {len(bad)} {what} "
            f"(e.g. {where} {bad[:5].tolist()})"
        )

    def _assemble(self, parts: list[tuple[np.ndarray, APIOutput]], *, n: int, name: str) -> APIOutput:
        """Gather ``(positions, output)`` parts from all ranks into one ``n``-sample output.

        Every position must be covered exactly once; large image arrays are memory-mapped.
        """
        parts = [p for rank_parts in self._gather(parts) for p in rank_parts]
        if not parts:
            raise RuntimeError(f"no {name} samples were produced")
        first = parts[0][1]
        images = self._scratch.allocate((n, *first.images.shape[1:]), np.uint8, name=name)
        conditions = {k: np.empty((n, *v.shape[1:]), dtype=v.dtype) for k, v in first.conditions.items()}
        covered = np.zeros(n, dtype=np.int64)
        for positions, out in parts:
            images[positions] = out.images
            if set(out.conditions) != set(conditions):
                raise ValueError(
                    f"{type(self.api).__name__} returned condition keys {sorted(out.conditions)} in one call and "
                    f"{sorted(conditions)} in another; an API must return the same keys every call"
                )
            for k, v in out.conditions.items():
                conditions[k][positions] = v
            covered[positions] += 1
        if (covered != 1).any():
            raise RuntimeError(f"internal error: {name} positions covered {covered.min()}..{covered.max()} times")
        return APIOutput(images=images, conditions=conditions)

    def _random(self, labels: np.ndarray) -> Population:
        self.api.set_iteration(0)
        parts = []
        with self._timed("api"), self._timed("api_random"):
            for i, sl in self._reported_chunks("random", len(labels)):
                out = self.api.random(labels=labels[sl], generator=make_generator(self.seed, 0, "random", i))
                parts.append((np.arange(sl.start, sl.stop), out))
        out = self._assemble(parts, n=len(labels), name="population")
        return Population(images=out.images, labels=labels, conditions=out.conditions)

    def _call_variation(self, population: Population, sl: slice | np.ndarray, *, iteration: int, generator: torch.Generator) -> APIOutput:
        return self.api.variation(
            images=np.ascontiguousarray(population.images[sl]),
            conditions={k: v[sl] for k, v in population.conditions.items()},
            labels=population.labels[sl],
            degree=self.variation_degrees[iteration - 1],
            generator=generator,
        )

    # ---------------------------------------------------------------- the loop
    def on_train_epoch_start(self) -> None:
        if self.iteration != self.current_epoch:
            raise RuntimeError(f"PE iteration counter ({self.iteration}) and epoch ({self.current_epoch}) disagree")
        self._iteration_start = time.perf_counter()
        t = self.iteration + 1
        self.api.set_iteration(t)
        pop = self.population
        k = self.lookahead_degree
        store = self._lookahead
        if self.reuse_lookahead and k > 0:
            shape = dict(k=k, n=len(pop), chunk_size=self.api_batch_size, image_shape=pop.images.shape[1:])
            if store is None or not store.matches(**shape):
                # A spilled store keeps its file across iterations (same shape every iteration).
                store = self._lookahead = LookaheadStore(scratch=self._scratch, **shape)

        def lookahead_embedding(i: int, sl: slice) -> torch.Tensor:
            if k == 0:
                return self._embed(np.ascontiguousarray(pop.images[sl]))
            emb = None
            for r in range(k):
                with self._timed("api"), self._timed("api_lookahead"):
                    out = self._call_variation(pop, sl, iteration=t, generator=make_generator(self.seed, t, "lookahead", r, i))
                # The synthetic embedding is the mean of the k variations' embeddings.
                e = self._embed(out.images)
                with self._timed("embedding"):
                    emb = e if emb is None else emb.add_(e)
                if store is not None:
                    store.put(r, i, out)
                del out
            if store is not None:
                store.evict()
            with self._timed("embedding"):
                return emb.div_(k)

        emb = self._sharded_rows(len(pop), lookahead_embedding, buffer=True, stage="lookahead")
        self._check_finite(emb, what="synthetic images", where=f"iteration {t}, population indices")
        self._synthetic_embeddings = emb.to(self.device)
        self._synthetic_labels = torch.from_numpy(pop.labels).to(self.device)
        n_private = len(self._private_embeddings)
        self._assignments = torch.full((n_private, self.num_nearest_neighbors), -1, dtype=torch.int64, device=self.device)

    def training_step(self, batch, batch_idx: int) -> None:
        (indices,) = batch if isinstance(batch, (list, tuple)) else (batch,)
        # One row per private index: a sample seen twice overwrites its own vote, never adds.
        rows = _as_slice(indices)  # in-order batches (one process) are views, not copies
        if rows is None:
            rows = indices.to(self.device)
        with self._timed("voting"):
            self._assignments[rows] = assign_votes(
                private_embeddings=self._private_embeddings[rows],
                private_labels=self._private_labels[rows],
                synthetic_embeddings=self._synthetic_embeddings,
                synthetic_labels=self._synthetic_labels,
                k=self.num_nearest_neighbors,
                backend=self.search_backend,
                distance=self.distance,
            )
        self._report_stage("voting", batch_idx + 1, self.trainer.num_training_batches)
        return None

    def gather_assignments(self) -> torch.Tensor:
        """Votes of all private samples, combined across ranks (:func:`~pe_lightning.release.combine_assignments`)."""
        parts = [self._assignments]
        if self.trainer.world_size > 1:
            parts = list(self.all_gather(self._assignments).unbind(0))
        try:
            return combine_assignments(parts)
        except RuntimeError as err:
            raise RuntimeError(f"{err} in iteration {self.iteration + 1}") from None

    def on_train_epoch_end(self) -> None:
        t = self.iteration + 1
        pop = self.population
        assignments = self.gather_assignments()
        with self._timed("selection"):
            # Noise is drawn once, after the cross-rank combination, keyed by the run's noise
            # key and t: every rank draws the same numbers. Only noisy quantities come back.
            sigma = float(self.noise_multiplier)
            released = release_votes(
                assignments.cpu(), num_synthetic=len(pop), noise_multiplier=sigma, threshold=self.threshold,
                key=self._noise_key, iteration=t, clients=self._private_clients,
            )
            noisy, weights = released.noisy_counts, released.weights
            self.noise_record.append(
                {"iteration": t, "noise_multiplier": sigma, "noise_mode": self._noise_key.mode, "key_id": self._noise_key.key_id}
            )
            parents = select_parents(
                weights=weights,
                labels=torch.from_numpy(pop.labels),
                num_per_class=self._parents_per_class(t),
                generator=make_generator(self.seed, t, "selection"),
                class_names=self.class_names,
                mode=self.selection,
            ).numpy()
        child_parents = np.repeat(parents, self.variations_per_parent)  # grouped by class, like parents
        if len(child_parents):
            out, reused = self._children(pop, child_parents, iteration=t)
        else:  # variations_per_parent=0 with keep_selected: the next population is the selected parents
            out, reused = APIOutput(images=pop.images[:0].copy(), conditions={k: v[:0] for k, v in pop.conditions.items()}), 0
        if self._lookahead is not None:
            self._lookahead.clear()  # in-memory variations are not needed any more
        old_images = pop.images
        self.population = self._next_population(pop, out, child_parents, parents)
        ScratchSpace.release(old_images)
        self.iteration = t
        self._synthetic_embeddings = None
        self._assignments = None
        self._count_iteration_as_step()
        self.log_iteration_metrics(
            {
                "pe/selected_unique": float(len(np.unique(parents))),
                "pe/noisy_count_max": float(noisy.max()),
                "pe/nonzero_after_threshold": float((weights > 0).sum()),
                "pe/variation_degree": self.variation_degrees[t - 1],
                "pe/reused_lookahead_fraction": reused / max(len(child_parents), 1),
            }
        )
        self._publish_population(iteration=t)

    def _next_population(self, pop: Population, children: APIOutput, child_parents: np.ndarray, parents: np.ndarray) -> Population:
        """The children, plus the selected parents themselves with ``keep_selected``, grouped by class."""
        if not self.keep_selected:
            return Population(images=children.images, labels=pop.labels[child_parents], conditions=children.conditions, parents=child_parents)
        kept = pop.take(parents)
        all_parents = np.concatenate([child_parents, parents])
        order = np.argsort(pop.labels[all_parents], kind="stable")  # per class: children first, then the kept parents
        images = np.concatenate([children.images, kept.images])[order]
        conditions = {k: np.concatenate([v, kept.conditions[k]])[order] for k, v in children.conditions.items()}
        return Population(images=images, labels=pop.labels[all_parents][order], conditions=conditions, parents=all_parents[order])

    def _children(self, pop: Population, parents: np.ndarray, *, iteration: int) -> tuple[APIOutput, int]:
        """One variation of each selected parent: reused lookahead variations, fresh ones otherwise.

        Returns:
            The new population's images and conditions (in ``parents`` order) and the
            number of children taken from the lookahead variations.
        """
        n = len(parents)
        reuse = np.zeros(n, dtype=bool)
        occurrence = np.zeros(n, dtype=np.int64)
        store = self._lookahead
        if store is not None:
            # The m-th selection of a parent (in slot order) takes its m-th lookahead variation.
            order = np.argsort(parents, kind="stable")
            sorted_parents = parents[order]
            group_start = np.searchsorted(sorted_parents, sorted_parents, side="left")
            occurrence[order] = np.arange(n) - group_start
            reuse = occurrence < self.lookahead_degree
        parts = []
        rank, world = self.global_rank, self.trainer.world_size
        reused_slots = np.flatnonzero(reuse)
        mine = reused_slots[(parents[reused_slots] // self.api_batch_size) % world == rank]  # parents whose lookahead this rank made
        if len(mine):
            parts.append((mine, store.take(occurrence[mine], parents[mine])))
        fresh_slots = np.flatnonzero(~reuse)
        if len(fresh_slots):
            selected = pop.take(parents[fresh_slots])
            with self._timed("api"), self._timed("api_variation"):
                for i, sl in self._reported_chunks("variation", len(fresh_slots)):
                    out = self._call_variation(selected, sl, iteration=iteration, generator=make_generator(self.seed, iteration, "variation", 0, i))
                    parts.append((fresh_slots[sl], out))
        return self._assemble(parts, n=n, name="population"), len(reused_slots)

    def _count_iteration_as_step(self) -> None:
        # No optimizer ever steps here, so Lightning's global_step would stay 0 and
        # ModelCheckpoint would never save. Count each completed PE iteration as one step.
        loop = self.trainer.fit_loop.epoch_loop.manual_optimization
        loop.optim_step_progress.increment_ready()
        loop.optim_step_progress.increment_completed()

    # ------------------------------------------------------------- publishing
    def log_iteration_metrics(self, metrics: dict[str, float]) -> None:
        """Queue metrics for the current iteration (logged at ``step=iteration``)."""
        self._pending_metrics.update({k: float(v) for k, v in metrics.items()})

    def _publish_population(self, *, iteration: int) -> None:
        with self._timed("callbacks"):
            callbacks = [cb for cb in self.trainer.callbacks if isinstance(cb, PopulationCallback)]
            for done, cb in enumerate(callbacks):
                self._report_stage("callbacks", done, len(callbacks))
                cb.on_population(self.trainer, self, population=self.population, iteration=iteration)
        metrics = {"pe/iteration": float(iteration), "time/iteration_s": time.perf_counter() - self._iteration_start}
        metrics.update({f"time/{k}_s": v for k, v in self._timings.items()})
        self._timings.clear()
        self._flush_metrics(metrics, step=iteration, headline=f"[PE] iteration {iteration}/{self.iterations}")

    def _flush_metrics(self, metrics: dict[str, float], *, step: int, headline: str) -> None:
        """Send ``metrics`` plus the queued ones to every logger at ``step``, the trainer, and one console line."""
        metrics = {**metrics, **self._pending_metrics}
        self._pending_metrics = {}
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=step)
        self.trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        parts = [f"{k}={v:.4g}" for k, v in metrics.items() if k != "pe/iteration"]
        rank_zero_info(f"{headline} | " + " | ".join(parts))

    @property
    def resolved_output_dir(self) -> Path:
        """``output_dir``, or the output root ``trainer.default_root_dir`` when unset."""
        if self.output_dir:
            return Path(self.output_dir)
        return Path(self.trainer.default_root_dir)

    def _check_output_dir_writable(self) -> None:
        """Fail before any privacy is spent if the final population could not be written."""
        out = self.resolved_output_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-test-{self.global_rank}-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise PermissionError(f"output_dir {str(out)!r} is not writable: {err}") from err

    def on_train_end(self) -> None:
        self.final_population_dir = self.resolved_output_dir / "final"
        if self.trainer.is_global_zero:
            self.population.save(self.final_population_dir, class_names=self.class_names, png=self.save_png)
            rank_zero_info(
                f"[PE] final population ({len(self.population)} synthetic images, iteration {self.iteration}) written to "
                f"{self.final_population_dir / 'population.npz'}"
                + (f" and {self.final_population_dir / 'images'}/<class>/<index>.png" if self.save_png else "")
            )
            modes = sorted({r["noise_mode"] for r in self.noise_record})
            keys = sorted({r["key_id"] for r in self.noise_record})
            rank_zero_info(
                f"[PE] DP noise: {'+'.join(modes) or 'none'} (key id {', '.join(keys) or '-'})"
                + (" -- SEEDED: private only while the seed stays secret" if "seeded" in modes else "")
            )

    def teardown(self, stage: str) -> None:
        # Scratch files are working state: remove them (arrays still mapping them stay
        # readable on POSIX until released).
        self._lookahead, self._embedding_buffer = None, None
        if self._scratch is not None:
            self._scratch.close()

    # ------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["private_evolution"] = {
            "population": self.population.state_dict() if self.population is not None else None,
            "iteration": self.iteration,
            "num_per_class": list(self.num_per_class),
            "class_names": list(self.class_names),
            "run_id": self.run_id,  # public: names the key file; the key itself is never checkpointed
            "noise_record": [dict(r) for r in self.noise_record],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("private_evolution")
        if state is None:
            raise ValueError("checkpoint has no 'private_evolution' state: it was not written by PrivateEvolution")
        self.population = Population.from_state_dict(state["population"]) if state["population"] is not None else None
        self.iteration = int(state["iteration"])
        # The checkpoint's sigma is never adopted: a resumed run spends budget only with a
        # sigma set for this run (the PrivacyAccountant's calibration, which extends the
        # restored ledger, or an explicit noise_multiplier); on_fit_start refuses otherwise.
        self.run_id = state.get("run_id")
        self.noise_record = [dict(r) for r in state.get("noise_record", [])]
        if len(self.noise_record) != self.iteration:
            raise ValueError(
                f"checkpoint records noise for {len(self.noise_record)} iterations but holds iteration {self.iteration}: "
                "it was written by an older pe_lightning without a noise record; its privacy spend cannot be extended"
            )

