"""One PE run's state and its per-iteration stages, without Lightning (docs/design.md §1).

:class:`PEEngine` holds the population, the iteration counter, the sizes per class and
the noise record, and runs the stages of an iteration as named methods, in order:

1. :meth:`PEEngine.begin_iteration`: lookahead embeddings of the population (sharded).
2. :meth:`PEEngine.vote`: each private sample's nearest synthetic samples (per batch).
3. :meth:`PEEngine.gather_assignments`: the votes of every rank, each sample once.
4. :meth:`PEEngine.evolve`: the DP release (:func:`~pe_lightning.engine.release.release_and_select`,
   the only step that reads private data), then the children (:meth:`PEEngine.children`,
   reusing lookahead variations by :func:`~pe_lightning.engine.reuse.reuse_plan`) as the
   next population; with ``tone_share`` the last release also carries the private peak-level
   counts, and the final population is matched to them (:mod:`pe_lightning.engine.tone`).

:meth:`PEEngine.prepare` readies an engine in one call (classes, where it runs, the
private side, ``S_0``). The Lightning module maps its hooks onto these stages
(:mod:`pe_lightning.evolution`); :func:`pe_lightning.engine.loop.run_loop` calls them in a plain loop.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.embedding_cache import EmbeddingCache
from pe_lightning.embeddings.base import Embedding
from pe_lightning.engine.hooks import RunView
from pe_lightning.engine.diagnostics import vote_diagnostics
from pe_lightning.engine.lookahead_mean import LookaheadMean, overlap_lookahead
from pe_lightning.engine.lookahead_store import LookaheadStore
from pe_lightning.engine.release import combine_assignments, release_and_select
from pe_lightning.engine.reuse import next_population, reuse_plan
from pe_lightning.engine.scratch import ScratchSpace
from pe_lightning.engine.settings import EngineSettings
from pe_lightning.engine.tone import match_tone, peak_bins
from pe_lightning.engine.sharding import (
    Collective,
    ProcessGroupCollective,
    assemble,
    made_by,
    reported_chunks,
    sharded_rows,
)
from pe_lightning.final_stage import write_final
from pe_lightning.noise import NoiseKey
from pe_lightning.population import Population
from pe_lightning.seeding import make_generator
from pe_lightning.neighbors import as_slice
from pe_lightning.voting import assign_votes

__all__ = ["PEEngine"]

#: ``report(stage, done, total)``: progress of a stage (:data:`pe_lightning.engine.hooks.STAGES`).
StageReport = Callable[[str, int, int], None]


class PEEngine:
    """The PE loop's state and stages.

    Args:
        settings: the run's configuration.
        api: RANDOM and VARIATION.
        embedding: the voting embedding (private and synthetic images alike).

    Before running stages, :meth:`prepare` readies it (classes, process group, scratch
    storage, device, the private side and ``S_0``); :meth:`load_state_dict` (resume) comes
    before it.
    """

    def __init__(self, *, settings: EngineSettings, api: ImageAPI, embedding: Embedding) -> None:
        self.settings = settings
        self.api = api
        self.embedding = embedding
        self.population: Population | None = None
        self.iteration = 0  # completed iterations
        self.class_names: list[str] = []
        self.sizes_per_iteration: list[list[int]] = []  # per class, at iterations 0 .. T
        self.noise_record: list[dict] = []  # per iteration: sigma used, noise mode, public key id
        self.timings: dict[str, float] = defaultdict(float)
        self.collective: Collective = ProcessGroupCollective()
        self.scratch: ScratchSpace | None = None
        self.device = torch.device("cpu")
        self.report: StageReport = lambda stage, done, total: None
        self._private_embeddings: torch.Tensor | None = None
        self._private_labels: torch.Tensor | None = None
        self._private_clients: torch.Tensor | None = None
        self._private_peaks: np.ndarray | None = None  # peak-level bin of each private image (tone release only)
        self._synthetic_embeddings: torch.Tensor | None = None
        self._synthetic_labels: torch.Tensor | None = None
        self._assignments: torch.Tensor | None = None
        self.lookahead_store: LookaheadStore | None = None  # this rank's lookahead variations (reuse only)
        self._embedding_buffer: np.ndarray | None = None  # (N, D) float32, reused every iteration

    # ------------------------------------------------------------------ set-up
    def prepare(
        self,
        *,
        class_names: Sequence[str],
        sizes_per_iteration: Sequence[Sequence[int]],
        private_images: np.ndarray,
        private_labels: np.ndarray,
        private_clients: np.ndarray | None = None,
        scratch: ScratchSpace,
        device: torch.device | str = "cpu",
        collective: Collective | None = None,
        report: StageReport | None = None,
        cache: EmbeddingCache | None = None,
        data_fingerprint: str = "",
        info: Callable[[str], None] = print,
    ) -> bool:
        """Ready the engine for :meth:`begin_iteration`, in one call (after any :meth:`load_state_dict`).

        Binds the classes and where the stages run, sets the API and the embedding up on
        ``device``, embeds the private images (:meth:`private_embeddings`; sharded, or from
        ``cache``) and, for a run without a population, makes ``S_0`` (:meth:`random_population`).

        Args:
            class_names: the private data's classes, in label order.
            sizes_per_iteration: synthetic samples per class at iterations ``0 .. T`` (public).
            private_images: uint8 ``(M, H, W, C)``.
            private_labels: int64 ``(M,)``.
            private_clients: int64 ``(M,)`` client ids (client-level DP), else ``None``.
            scratch: storage for large arrays.
            device: where the API, the embedding and the votes run.
            collective: the ranks' collective (default: the default process group, or one process).
            report: ``report(stage, done, total)`` progress callback
                (:meth:`~pe_lightning.engine.hooks.HookCaller.on_stage`).
            cache, data_fingerprint, info: see :meth:`private_embeddings`.

        Returns:
            ``True`` when it made ``S_0`` (a fresh run); ``False`` for a resumed run, whose
            set-up time then belongs to no iteration (the stage timings are dropped).
        """
        self.class_names = list(class_names)
        self.sizes_per_iteration = [list(s) for s in sizes_per_iteration]
        self.attach(collective=collective or ProcessGroupCollective(), scratch=scratch, device=device, report=report)
        self.api.setup(device=self.device, class_names=self.class_names)
        self.embedding.setup(device=self.device)
        embeddings = self.private_embeddings(private_images, cache=cache, data_fingerprint=data_fingerprint, info=info)
        self.set_private(embeddings=embeddings, labels=private_labels, clients=private_clients)
        if self.settings.tone_share > 0:  # private side, like the labels: read only by the last release
            self._private_peaks = peak_bins(private_images, bins=self.settings.tone_bins)
        if self.population is not None:
            self.take_timings()
            return False
        self.random_population()
        return True

    def view(self, *, output_dir: Path, **more: Any) -> RunView:
        """The run as callbacks see it (:class:`~pe_lightning.engine.hooks.RunView`); ``more`` fills the other fields.

        ``noise_multiplier`` defaults to the sigma of the latest release (``None`` before any).
        """
        if more.get("noise_multiplier") is None and self.noise_record:
            more["noise_multiplier"] = float(self.noise_record[-1]["noise_multiplier"])
        return RunView(
            iteration=self.iteration, iterations=self.settings.iterations, class_names=tuple(self.class_names),
            output_dir=output_dir, noise_record=tuple(dict(r) for r in self.noise_record),
            population_size=len(self.population) if self.population is not None else None, **more,
        )

    def attach(
        self, *, collective: Collective, scratch: ScratchSpace, device: torch.device | str, report: StageReport | None = None
    ) -> None:
        """Where the stages run: the ranks' collective, scratch storage, the device, a progress callback."""
        self.collective, self.scratch, self.device = collective, scratch, torch.device(device)
        if report is not None:
            self.report = report

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Adds the wall time of the block to :attr:`timings` ``[name]`` (seconds)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += time.perf_counter() - start

    def take_timings(self) -> dict[str, float]:
        """This iteration's stage times (seconds), then reset."""
        out = dict(self.timings)
        self.timings.clear()
        return out

    def embed(self, images: np.ndarray) -> torch.Tensor:
        """``(n, D)`` float32 embeddings of uint8 NHWC ``images`` (timed as ``embedding``)."""
        with self.timed("embedding"):
            return self._embed_untimed(images)

    def _embed_untimed(self, images: np.ndarray) -> torch.Tensor:
        return self.embedding.embed(images, batch_size=self.settings.embedding_batch_size).float()

    def chunks(self, stage: str, n: int):
        """This rank's ``(chunk index, slice)`` of ``range(n)``, reporting ``stage``'s progress."""
        return reported_chunks(n, self.settings.api_batch_size, collective=self.collective,
                               report=lambda done, total: self.report(stage, done, total))

    def _sharded(self, n: int, rows_of_chunk, *, stage: str, buffer: bool = False) -> torch.Tensor:
        def reuse_buffer(dim: int) -> np.ndarray:
            if self._embedding_buffer is None or self._embedding_buffer.shape != (n, dim):
                self._embedding_buffer = np.empty((n, dim), dtype=np.float32)
            return self._embedding_buffer

        return sharded_rows(n, rows_of_chunk, chunk_size=self.settings.api_batch_size, collective=_Timed(self),
                            out=reuse_buffer if buffer else None, report=lambda done, total: self.report(stage, done, total))

    def assemble(self, parts, *, n: int, name: str) -> APIOutput:
        """Every rank's ``(positions, output)`` parts as one ``n``-sample output (:func:`~pe_lightning.engine.sharding.assemble`)."""
        return assemble(parts, n=n, collective=_Timed(self), scratch=self.scratch, name=name, api_name=type(self.api).__name__)

    def private_embeddings(
        self, images: np.ndarray, *, cache: EmbeddingCache | None = None, data_fingerprint: str = "",
        info: Callable[[str], None] = print,
    ) -> torch.Tensor:
        """Private embeddings ``(N_private, D)``, sharded across ranks or read from ``cache``.

        The cache holds data derived from the private images: keep it on the private side.
        Its entries are named by a keyed digest of ``data_fingerprint`` and the embedding's
        fingerprint; only the folder is printed, never an entry's name, a hit or a size.
        """
        if cache is not None:
            info(f"[PE] private-embedding cache (derived from private images; keep private): {cache.directory}")
            cache_key = cache.key(data_fingerprint=data_fingerprint, embedding_fingerprint=self.embedding.fingerprint)
            cached = cache.load(cache_key, num_rows=len(images))
            if all(_Timed(self).gather(cached is not None)):  # every rank hit: use it
                return torch.from_numpy(cached)
        embeddings = self._sharded(len(images), lambda i, sl: self.embed(images[sl]), stage="private embedding")
        self._check_finite(embeddings, what="private images", where="private indices")
        if cache is not None and self.collective.rank == 0:
            cache.save(cache_key, embeddings.numpy())
        return embeddings

    @property
    def num_private(self) -> int:
        """Private samples that vote (after :meth:`set_private`)."""
        return len(self._private_embeddings)

    def set_private(self, *, embeddings: torch.Tensor, labels: np.ndarray, clients: np.ndarray | None = None) -> None:
        """The private side of the votes: embeddings ``(M, D)``, labels ``(M,)``, client ids ``(M,)`` (client-level DP)."""
        self._private_embeddings = embeddings.to(self.device)
        self._private_labels = torch.from_numpy(labels).to(self.device)
        self._private_clients = torch.from_numpy(clients) if clients is not None else None

    def _check_finite(self, embeddings: torch.Tensor, *, what: str, where: str) -> None:
        """Raise naming the rows with NaN/inf (one float32 sum decides whether to look row by row)."""
        if math.isfinite(float(embeddings.sum())) or torch.isfinite(embeddings).all():
            return
        bad = torch.nonzero(~torch.isfinite(embeddings).all(dim=1)).flatten()
        raise ValueError(
            f"the embedding {type(self.embedding).__name__} produced NaN/inf for {len(bad)} {what} "
            f"(e.g. {where} {bad[:5].tolist()})"
        )

    # ------------------------------------------------------------- generation
    def random_population(self) -> Population:
        """``S_0``: RANDOM samples, ``sizes_per_iteration[0]`` per class (no privacy spent)."""
        sizes = self.sizes_per_iteration[0]
        labels = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        self.api.set_iteration(0)
        parts = []
        with self.timed("api"), self.timed("api_random"):
            for i, sl in self.chunks("random", len(labels)):
                out = self.api.random(labels=labels[sl], generator=make_generator(self.settings.seed, 0, "random", i))
                parts.append((np.arange(sl.start, sl.stop), out))
        out = self.assemble(parts, n=len(labels), name="population")
        self.population, self.iteration = Population(images=out.images, labels=labels, conditions=out.conditions), 0
        return self.population

    def variation(self, population: Population, rows: slice | np.ndarray, *, iteration: int, generator: torch.Generator) -> APIOutput:
        """VARIATION of ``population[rows]`` at iteration ``iteration``'s degree."""
        return self.api.variation(
            images=np.ascontiguousarray(population.images[rows]),
            conditions={k: v[rows] for k, v in population.conditions.items()},
            labels=population.labels[rows],
            degree=self.settings.variation_degrees[iteration - 1],
            generator=generator,
        )

    # ---------------------------------------------------------------- the loop
    def begin_iteration(self) -> torch.Tensor:
        """Stage 1: the synthetic embeddings of iteration ``iteration + 1`` (mean of ``k`` lookahead variations)."""
        s, t, pop = self.settings, self.iteration + 1, self.population
        k = s.lookahead_degree
        self.api.set_iteration(t)
        store = self.lookahead_store
        if s.reuse_lookahead and k > 0:
            shape = dict(k=k, n=len(pop), chunk_size=s.api_batch_size, image_shape=pop.images.shape[1:])
            if store is None or not store.matches(**shape):
                # A spilled store keeps its file across iterations (same shape every iteration).
                store = self.lookahead_store = LookaheadStore(scratch=self.scratch, **shape)

        def lookahead_embedding(i: int, sl: slice) -> torch.Tensor:
            if k == 0:
                return self.embed(np.ascontiguousarray(pop.images[sl]))
            mean = LookaheadMean(self._embed_untimed, pool=pool)
            for r in range(k):
                with self.timed("api"), self.timed("api_lookahead"):
                    out = self.variation(pop, sl, iteration=t, generator=make_generator(s.seed, t, "lookahead", r, i))
                with self.timed("embedding"):  # with a pool: the wait for variation r - 1's embedding
                    mean.add(out.images)
                if store is not None:
                    store.put(r, i, out)
                del out
            if store is not None:
                store.evict()
            with self.timed("embedding"):
                emb = mean.mean()
            if pool is not None:
                self.timings["embedding_overlapped"] += mean.background_s
            return emb

        overlap = k > 0 and overlap_lookahead(self.embedding, setting=s.overlap_lookahead_embedding)
        with ThreadPoolExecutor(1, thread_name_prefix="pe-lookahead-embedding") if overlap else nullcontext() as pool:
            emb = self._sharded(len(pop), lookahead_embedding, buffer=True, stage="lookahead")
        self._check_finite(emb, what="synthetic images", where=f"iteration {t}, population indices")
        self._synthetic_embeddings = emb.to(self.device)
        self._synthetic_labels = torch.from_numpy(pop.labels).to(self.device)
        n_private = len(self._private_embeddings)
        self._assignments = torch.full((n_private, s.num_nearest_neighbors), -1, dtype=torch.int64, device=self.device)
        return self._synthetic_embeddings

    def vote(self, indices: torch.Tensor) -> None:
        """Stage 2: the votes of private samples ``indices`` (a sample seen twice overwrites its own row)."""
        rows = as_slice(indices)  # in-order batches (one process) are views, not copies
        if rows is None:
            rows = indices.to(self.device)
        s = self.settings
        with self.timed("voting"):
            self._assignments[rows] = assign_votes(
                private_embeddings=self._private_embeddings[rows],
                private_labels=self._private_labels[rows],
                synthetic_embeddings=self._synthetic_embeddings,
                synthetic_labels=self._synthetic_labels,
                k=s.num_nearest_neighbors,
                backend=s.search_backend,
                distance=s.distance,
            )

    def gather_assignments(self) -> torch.Tensor:
        """Stage 3: votes of all private samples, combined across ranks (collective: every rank calls it)."""
        parts = [self._assignments]
        if self.collective.world_size > 1:
            parts = _Timed(self).gather(self._assignments.cpu())
        try:
            return combine_assignments(parts)
        except RuntimeError as err:
            raise RuntimeError(f"{err} in iteration {self.iteration + 1}") from None

    def parents_per_class(self, iteration: int) -> list[int]:
        """Parents to select per class in ``iteration`` (1-based): the next sizes / (variations + kept)."""
        return [n // self.settings.fold for n in self.sizes_per_iteration[iteration]]

    def evolve(self, *, noise_multiplier: float, key: NoiseKey) -> dict[str, float]:
        """Stage 4: DP release with ``noise_multiplier``, selection, children; the iteration is complete.

        Noise is drawn once, after the cross-rank combination, keyed by ``key`` and the
        iteration: every rank draws the same numbers. Only noisy quantities come back.

        Returns:
            The iteration's ``pe/*`` metrics.
        """
        s, t, pop = self.settings, self.iteration + 1, self.population
        assignments = self.gather_assignments()
        tone = s.tone_share > 0 and t == s.iterations  # the last release carries the peak-level counts
        if tone and self._private_peaks is None:
            raise RuntimeError("the tone release needs the private peak levels: call prepare(...) first")
        with self.timed("selection"):
            released = release_and_select(
                assignments.cpu(), labels=torch.from_numpy(pop.labels), num_parents_per_class=self.parents_per_class(t),
                selection=s.selection, generator=make_generator(s.seed, t, "selection"), class_names=self.class_names,
                noise_multiplier=float(noise_multiplier), threshold=s.threshold, key=key, iteration=t,
                clients=self._private_clients, tone_peaks=self._private_peaks if tone else None,
                tone_bins=s.tone_bins, tone_share=s.tone_share,
            )
            record = {"iteration": t, "noise_multiplier": float(noise_multiplier), "noise_mode": key.mode, "key_id": key.key_id}
            self.noise_record.append({**record, "tone_share": s.tone_share} if tone else record)
        parents = released.parents.numpy()
        child_parents = np.repeat(parents, s.variations_per_parent)  # grouped by class, like parents
        out, reused = self.children(pop, child_parents, iteration=t)
        if self.lookahead_store is not None:
            self.lookahead_store.clear()  # in-memory variations are not needed any more
        old_images = pop.images
        self.population = next_population(pop, out, child_parents, parents, keep_selected=s.keep_selected)
        ScratchSpace.release(old_images)
        tone_metrics = {}
        if released.tone_weights is not None:  # post-processing of the release: the final population's tone
            untoned = self.population.images
            toned = self.scratch.allocate(untoned.shape, np.uint8, name="population") if self.scratch is not None else None
            self.population = dataclasses.replace(self.population, images=match_tone(untoned, released.tone_weights, out=toned))
            ScratchSpace.release(untoned)
            tone_metrics = {"pe/tone_bins_released": float((released.tone_weights > 0).sum())}
        self.iteration = t
        self._synthetic_embeddings = self._assignments = None
        return {
            "pe/selected_unique": float(len(np.unique(parents))),
            "pe/noisy_count_max": float(released.noisy_counts.max()),
            "pe/nonzero_after_threshold": float((released.weights > 0).sum()),
            "pe/variation_degree": s.variation_degrees[t - 1],
            "pe/reused_lookahead_fraction": reused / max(len(child_parents), 1),
            **tone_metrics,
            **vote_diagnostics(noisy_counts=released.noisy_counts, labels=pop.labels, threshold=s.threshold,
                               noise_multiplier=released.vote_noise, parents=parents, num_classes=len(self.class_names) or None).metrics(),
        }

    def children(self, pop: Population, parents: np.ndarray, *, iteration: int) -> tuple[APIOutput, int]:
        """One variation of each selected parent: reused lookahead variations, fresh ones otherwise.

        With ``reuse_lookahead`` the ``m``-th selection of a parent takes its ``m``-th stored
        lookahead variation (:func:`~pe_lightning.engine.reuse.reuse_plan`); post-processing.
        Each rank contributes the reused children whose parents' lookahead it made
        (:func:`~pe_lightning.engine.sharding.made_by`) and its chunks of the fresh ones;
        the parts are assembled on every rank.

        Returns:
            The children's images and conditions (in ``parents`` order) and the number taken
            from the lookahead variations.
        """
        s, n = self.settings, len(parents)
        if n == 0:  # variations_per_parent=0 with keep_selected: the next population is the selected parents
            return APIOutput(images=pop.images[:0].copy(), conditions={k: v[:0] for k, v in pop.conditions.items()}), 0
        store = self.lookahead_store
        if store is not None:
            reuse, occurrence = reuse_plan(parents, lookahead_degree=s.lookahead_degree)
        else:
            reuse, occurrence = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
        parts = []
        reused_slots = np.flatnonzero(reuse)
        mine = reused_slots[made_by(parents[reused_slots], chunk_size=s.api_batch_size, rank=self.collective.rank,
                                    world_size=self.collective.world_size)]  # parents whose lookahead this rank made
        if len(mine):
            parts.append((mine, store.take(occurrence[mine], parents[mine])))
        fresh_slots = np.flatnonzero(~reuse)
        if len(fresh_slots):
            selected = pop.take(parents[fresh_slots])
            with self.timed("api"), self.timed("api_variation"):
                for i, sl in self.chunks("variation", len(fresh_slots)):
                    gen = make_generator(s.seed, iteration, "variation", 0, i)
                    parts.append((fresh_slots[sl], self.variation(selected, sl, iteration=iteration, generator=gen)))
        return self.assemble(parts, n=n, name="population"), len(reused_slots)

    def save_final(self, directory: Path, *, png: bool) -> list[str]:
        """Write the population to ``directory`` unless it is there complete (:func:`~pe_lightning.final_stage.write_final`); returns console lines."""
        pop = self.population
        written = write_final(directory, population=pop, class_names=self.class_names, iteration=self.iteration, png=png)
        modes = sorted({r["noise_mode"] for r in self.noise_record})
        keys = sorted({r["key_id"] for r in self.noise_record})
        return [
            f"[PE] final population ({len(pop)} synthetic images, iteration {self.iteration}) "
            f"{'written to' if written else 'already complete in'} "
            f"{directory / 'population.npz'}" + (f" and {directory / 'images'}/<class>/<index>.png" if png else ""),
            f"[PE] DP noise: {'+'.join(modes) or 'none'} (key id {', '.join(keys) or '-'})"
            + (" -- SEEDED: private only while the seed stays secret" if "seeded" in modes else ""),
        ]

    def close(self) -> None:
        """Drop working state; remove scratch files (arrays still mapping them stay readable on POSIX)."""
        self.lookahead_store, self._embedding_buffer = None, None
        if self.scratch is not None:
            self.scratch.close()

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The run's resumable state (synthetic data and public records only)."""
        return {
            "population": self.population.state_dict() if self.population is not None else None,
            "iteration": self.iteration,
            "num_per_class": list(self.sizes_per_iteration[0]) if self.sizes_per_iteration else [],
            "class_names": list(self.class_names),
            "noise_record": [dict(r) for r in self.noise_record],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses a checkpoint without a noise record for each iteration."""
        self.population = Population.from_state_dict(state["population"]) if state["population"] is not None else None
        self.iteration = int(state["iteration"])
        self.noise_record = [dict(r) for r in state.get("noise_record", [])]
        if len(self.noise_record) != self.iteration:
            raise ValueError(
                f"checkpoint records noise for {len(self.noise_record)} iterations but holds iteration {self.iteration}: "
                "it was written by an older pe_lightning without a noise record; its privacy spend cannot be extended"
            )


class _Timed:
    """The engine's collective, with its gathers timed as ``gather``."""

    def __init__(self, engine: PEEngine) -> None:
        self._engine = engine
        self.rank, self.world_size = engine.collective.rank, engine.collective.world_size

    def gather(self, obj: Any) -> list[Any]:
        with self._engine.timed("gather"):
            return self._engine.collective.gather(obj)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return self._engine.collective.broadcast(obj, src)


def __getattr__(name: str) -> Any:
    if name == "EngineAttribute":  # moved to the adapter side; old imports keep working
        from pe_lightning.engine_attribute import EngineAttribute  # noqa: PLC0415

        return EngineAttribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
