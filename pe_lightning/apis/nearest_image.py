"""NearestImage: a public image set as a data-access simulator of a foundation model.

This is the data-based simulator of Sim-PE (Lin et al., *Differentially Private Synthetic
Data via APIs 3*, 2025): no generative model at all, only a public set.

* RANDOM draws public images uniformly at random (from the sample's class when
  ``class_conditional``).
* VARIATION replaces each sample by one of the ``k`` nearest public neighbours of its public
  image in an embedding, uniformly. **The variation degree is ``k``**: an integer in
  ``[0, max_neighbors]``; ``0`` returns the same image, a larger ``k`` a wider step. A
  schedule that explores early and refines late is ``variation_degrees: [32, 16, 8, 4]``.

The neighbour graph (``max_neighbors`` neighbours of every public image, within its class
when class-conditional, the image itself excluded) is built once in :meth:`NearestImage.setup`
with :func:`pe_lightning.neighbors.nearest_neighbors` (faiss or torch, L2 / cosine / inner
product) and kept on the instance; ``graph_cache_dir`` also keeps it on disk, keyed by the
public set's content, the embedding's fingerprint and the graph settings. It holds public
data only.

The API condition of a sample is ``public_index`` (int64): its row in the public set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput, ImageAPI, check_api_labels
from pe_lightning.data.public import PublicImages, load_public_images
from pe_lightning.embeddings.base import Embedding
from pe_lightning.embeddings.pixels import PixelEmbedding
from pe_lightning.neighbors import check_distance, nearest_neighbors, resolve_backend

__all__ = ["NearestImage", "neighbor_graph"]


def neighbor_graph(
    embeddings: torch.Tensor, *, k: int, distance: str = "l2", backend: str = "auto"
) -> torch.Tensor:
    """The ``k`` nearest other rows of each row of ``embeddings``.

    Args:
        embeddings: float ``(N, D)`` with ``N > k``.
        k: neighbours per row, ``>= 0``.
        distance: ``'l2'``, ``'cosine'`` or ``'ip'`` (see :func:`~pe_lightning.neighbors.nearest_neighbors`).
        backend: ``'auto'``, ``'faiss'`` or ``'torch'``.

    Returns:
        int64 ``(N, k)`` row indices, nearest first, never the row itself (a duplicate
        image may appear: it is another row).
    """
    n = len(embeddings)
    if k == 0:
        return torch.empty(n, 0, dtype=torch.int64)
    if n <= k:
        raise ValueError(f"a {k}-neighbour graph needs more than {k} images, got {n}")
    found = nearest_neighbors(embeddings, embeddings, k=k + 1, backend=backend, distance=distance).cpu()
    is_self = found == torch.arange(n)[:, None]
    # Move the row itself (usually first; anywhere among equal images) to the end, keep the order of the rest.
    order = torch.argsort(is_self.to(torch.int8), dim=1, stable=True)
    return found.gather(1, order)[:, :k].contiguous()


class NearestImage(ImageAPI):
    """RANDOM and VARIATION APIs simulated by a public image set (Sim-PE's data-based simulator).

    See the module docstring: the variation ``degree`` is ``k``, the number of nearest
    public neighbours the new image is drawn from. Each class's ``k`` is capped at its
    public size minus one. The synthetic images are public images as they are, so the
    source must be public data (it is outside the DP guarantee, like a model's weights).

    Args:
        source: the public set: a folder (``<class>/<image>`` sub-folders, or images
            directly in it), a ``.npz`` file (``images``, optional ``labels`` and
            ``class_names``), ``hf:<dataset id or save_to_disk folder>`` or
            ``sklearn:digits`` (:mod:`pe_lightning.data.public`).
        image_size: side of the output images, pixels (public images are resized, bicubic).
        channels: 1 or 3 (public images are converted).
        class_conditional: private class ``c`` draws only public images of the public class
            with the same name (folder name, ``class_names`` entry or ``ClassLabel`` name);
            every private class must have one. ``False``: all public images for every class.
        embedding: the space of the neighbour graph (default ``PixelEmbedding()``, raw pixels).
        max_neighbors: ``K``, neighbours kept per public image: the largest valid degree.
        distance: ``'l2'``, ``'cosine'`` or ``'ip'``.
        search_backend: ``'auto'``, ``'faiss'`` or ``'torch'``.
        graph_cache_dir: folder to keep built graphs in (``None``: memory only).
        hf_split: split of a Hugging Face source.
        hf_image_column: image column of a Hugging Face source.
        hf_label_column: label column of a Hugging Face source (``None``: unlabelled).
        embedding_batch_size: images per embedding pass while building the graph.
    """

    def __init__(
        self,
        *,
        source: str,
        image_size: int = 28,
        channels: int = 1,
        class_conditional: bool = True,
        embedding: Embedding | None = None,
        max_neighbors: int = 64,
        distance: str = "l2",
        search_backend: str = "auto",
        graph_cache_dir: str | None = None,
        hf_split: str = "train",
        hf_image_column: str = "image",
        hf_label_column: str | None = "label",
        embedding_batch_size: int = 1024,
    ) -> None:
        super().__init__()
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"NearestImage source must be a folder, .npz file, 'hf:...' or 'sklearn:digits', got {source!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"NearestImage image_size must be an int >= 1, got {image_size!r}")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"NearestImage channels must be 1 or 3, got {channels!r}")
        if not isinstance(class_conditional, bool):
            raise ValueError(f"NearestImage class_conditional must be a bool, got {class_conditional!r}")
        if embedding is not None and not isinstance(embedding, Embedding):
            raise TypeError(f"NearestImage embedding must be an Embedding, got {type(embedding).__name__}")
        if isinstance(max_neighbors, bool) or not isinstance(max_neighbors, int) or max_neighbors < 1:
            raise ValueError(f"NearestImage max_neighbors must be an int >= 1, got {max_neighbors!r}")
        if isinstance(embedding_batch_size, bool) or not isinstance(embedding_batch_size, int) or embedding_batch_size < 1:
            raise ValueError(f"NearestImage embedding_batch_size must be an int >= 1, got {embedding_batch_size!r}")
        check_distance(distance)
        resolve_backend(search_backend)
        self.source = source
        self.image_size = image_size
        self.channels = channels
        self.image_shape = (image_size, image_size, channels)
        self.class_conditional = class_conditional
        self.embedding = embedding if embedding is not None else PixelEmbedding()
        self.max_neighbors = max_neighbors
        self.distance = distance
        self.search_backend = search_backend
        self.graph_cache_dir = None if graph_cache_dir is None else str(graph_cache_dir)
        self.hf_split = hf_split
        self.hf_image_column = hf_image_column
        self.hf_label_column = hf_label_column
        self.embedding_batch_size = embedding_batch_size
        self.device = torch.device("cpu")
        self.class_names: list[str] | None = None
        self.public: PublicImages | None = None
        self._pools: dict | None = None  # pool of each public image, pools sorted, their starts and sizes
        self._graph: dict | None = None  # neighbours (N_public, K) and usable width per image

    # ------------------------------------------------------------------ set-up

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Load the public set, map private classes to public ones and build the graph (each once).

        Args:
            device: where the embedding and the search run.
            class_names: private class names in label order (needed when class-conditional).

        Raises:
            ValueError: a private class without public images, an unlabelled public set
                with ``class_conditional``, a bad source (named).
        """
        self.device = torch.device(device)
        if class_names is not None:
            self.class_names = [str(c) for c in class_names]
        if self.public is None:
            self.public = load_public_images(
                self.source, image_size=self.image_size, channels=self.channels, hf_split=self.hf_split,
                hf_image_column=self.hf_image_column, hf_label_column=self.hf_label_column,
            )
        pools = self._make_pools()
        if self._pools is None or not np.array_equal(self._pools["pool"], pools["pool"]):
            self._pools, self._graph = pools, None
        if self._graph is None:
            self._graph = self._load_or_build_graph()

    def _make_pools(self) -> dict:
        """Pool id of every public image (private class, or 0 when unconditional; -1 unused)."""
        public = self.public
        n = len(public.images)
        if not self.class_conditional:
            pool = np.zeros(n, dtype=np.int64)
            num_pools = 1
        else:
            if self.class_names is None:
                raise ValueError("NearestImage(class_conditional=True) needs setup(class_names=...) (the private classes)")
            if public.labels is None:
                raise ValueError(
                    f"NearestImage source {self.source!r} has no labels, so it cannot give each private class its "
                    "own public images; use class folders / labels, or class_conditional: false"
                )
            missing = [c for c in self.class_names if c not in public.class_names]
            if missing:
                raise ValueError(
                    f"NearestImage source {self.source!r} has no public images for the private classes {missing} "
                    f"(public classes: {public.class_names}); class-conditional runs need one public class per "
                    "private class, by name, or class_conditional: false"
                )
            to_pool = np.full(len(public.class_names), -1, dtype=np.int64)
            for c, name in enumerate(self.class_names):
                to_pool[public.class_names.index(name)] = c
            pool = to_pool[public.labels]
            num_pools = len(self.class_names)
        order = np.argsort(pool, kind="stable")
        order = order[pool[order] >= 0]
        sizes = np.bincount(pool[order], minlength=num_pools).astype(np.int64)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        return {"pool": pool, "order": order, "sizes": sizes, "starts": starts}

    def _graph_key(self) -> str:
        payload = {
            "public": self.public.fingerprint,
            "pool": hashlib.sha256(np.ascontiguousarray(self._pools["pool"]).data).hexdigest()[:16],
            "embedding": self.embedding.fingerprint,
            "k": self.max_neighbors,
            "distance": self.distance,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    def _load_or_build_graph(self) -> dict:
        path = None
        if self.graph_cache_dir is not None:
            path = Path(os.path.expanduser(self.graph_cache_dir)) / f"nearest_image_graph_{self._graph_key()}.npz"
            if path.is_file():
                with np.load(path) as cached:
                    return {"neighbors": cached["neighbors"], "width": cached["width"]}
        graph = self._build_graph()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
            np.savez(tmp, **graph)
            os.replace(tmp, path)
        return graph

    def _build_graph(self) -> dict:
        """Neighbours within each pool: ``neighbors`` int64 ``(N_public, K)`` (-1 padded), ``width`` int64 ``(N_public,)``."""
        pools = self._pools
        n = len(self.public.images)
        neighbors = np.full((n, self.max_neighbors), -1, dtype=np.int64)
        width = np.zeros(n, dtype=np.int64)
        self.embedding.setup(device=self.device)
        used = pools["order"]
        emb = self.embedding.embed(self.public.images[used], batch_size=self.embedding_batch_size).to(self.device)
        for start, size in zip(pools["starts"].tolist(), pools["sizes"].tolist()):
            if size == 0:
                continue
            k = min(self.max_neighbors, size - 1)
            members = used[start: start + size]
            local = neighbor_graph(emb[start: start + size], k=k, distance=self.distance, backend=self.search_backend)
            neighbors[members, :k] = members[local.numpy()]
            width[members] = k
        return {"neighbors": neighbors, "width": width}

    # ------------------------------------------------------------------ validation

    def validate_degree(self, degree: float) -> None:
        """Raise ``ValueError`` unless ``degree`` (= ``k``) is an integer in ``[0, max_neighbors]``."""
        try:
            value = float(degree)
        except (TypeError, ValueError):
            raise ValueError(f"NearestImage variation degree (k neighbours) must be a number, got {degree!r}") from None
        if not (math.isfinite(value) and value == int(value) and 0 <= value <= self.max_neighbors):
            raise ValueError(
                f"NearestImage variation degree is k, the number of nearest public neighbours drawn from: an integer "
                f"in [0, max_neighbors={self.max_neighbors}], got {degree!r}"
            )

    def check_ready(self, call: str) -> None:
        """Raise ``RuntimeError`` before :meth:`setup` has built the pools and the neighbour graph."""
        if self._graph is None:
            raise RuntimeError("NearestImage: call setup(class_names=...) before random() / variation()")

    def check_labels(self, labels: np.ndarray, n: int | None = None) -> np.ndarray:
        """Each sample's pool: its label, in ``[0, len(class_names))`` (class-conditional), else 0 (shape checked)."""
        if not self.class_conditional:
            return np.zeros(len(check_api_labels(labels, n=n, check_range=False)), dtype=np.int64)
        limit = len(self.class_names)
        return check_api_labels(labels, n=n, limit=limit, what=f"the {limit} private classes")

    def _output(self, public_index: np.ndarray) -> APIOutput:
        return APIOutput(images=self.public.images[public_index], conditions={"public_index": public_index})

    # ------------------------------------------------------------------ APIs

    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: public images drawn uniformly (with replacement) from each sample's pool.

        Args:
            labels: int64 ``(N,)`` each sample's pool (:meth:`check_labels`).
            generator: the only source of randomness.

        Returns:
            uint8 ``(N, image_size, image_size, channels)`` public images and their ``public_index``.
        """
        pools, pool = self._pools, labels
        u = torch.rand(len(pool), generator=generator, dtype=torch.float64, device=generator.device).cpu().numpy()
        sizes = pools["sizes"][pool]
        offset = np.minimum(np.floor(u * sizes).astype(np.int64), sizes - 1)
        return self._output(pools["order"][pools["starts"][pool] + offset])

    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """VARIATION_API: one of the ``degree`` nearest public neighbours of each sample, uniformly.

        The arguments were checked by :meth:`ImageAPI.variation`.

        Args:
            images: uint8 ``(N, image_size, image_size, channels)``; only the shape is used.
            conditions: ``{"public_index": int64 (N,)}`` from a previous call.
            labels: int64 ``(N,)`` each input's pool (:meth:`check_labels`).
            degree: ``k``, an integer in ``[0, max_neighbors]`` (0: the same image).
            generator: the only source of randomness.

        Returns:
            ``N`` public images and their ``public_index``, in input order.
        """
        n, pool = images.shape[0], labels
        index = self._check_public_index(conditions, pool)
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu().numpy()
        width = np.minimum(int(degree), self._graph["width"][index])
        pick = np.minimum(np.floor(u * width).astype(np.int64), np.maximum(width - 1, 0))
        return self._output(np.where(width > 0, self._graph["neighbors"][index, pick], index))

    def _check_public_index(self, conditions: dict[str, np.ndarray], pool: np.ndarray) -> np.ndarray:
        if not isinstance(conditions, dict) or "public_index" not in conditions:
            raise ValueError("conditions must hold 'public_index' (int64 (N,), the public image of each sample)")
        index = np.asarray(conditions["public_index"])
        n_public = len(self.public.images)
        if index.shape != pool.shape or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise ValueError(f"conditions['public_index'] must be integers of shape {pool.shape}, "
                             f"got {index.dtype} {index.shape}")
        if index.size and (index.min() < 0 or index.max() >= n_public):
            raise ValueError(f"conditions['public_index'] must lie in [0, {n_public}) (the public set's size), "
                             f"got min {index.min()} max {index.max()}")
        index = index.astype(np.int64)
        wrong = self._pools["pool"][index] != pool
        if wrong.any():
            i = int(np.argmax(wrong))
            raise ValueError(f"conditions['public_index'][{i}] = {index[i]} is not a public image of the sample's class "
                             f"(label {int(pool[i])}); it does not come from this NearestImage")
        return index
