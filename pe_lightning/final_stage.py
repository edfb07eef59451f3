"""The end of a PE run as a resumable stage: the final population is written whole, or not at all.

``<output_dir>/final`` (``population.npz``, the PNG tree ``images/<class>/<index>.png`` and
``manifest.json``) is filled in a temporary folder beside it and renamed into place
(:func:`~pe_lightning.atomic.atomic_directory`), so a kill or a full disk leaves either the
previous folder or the complete new one. ``manifest.json`` states which population the folder
holds (its iteration and the sha256 of its arrays: synthetic data, the DP release), so a
resumed run knows whether the folder it finds is its own, complete final population
(:func:`final_is_complete`) or must be written again (:func:`write_final`), with the same bytes
an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from pe_lightning.atomic import atomic_directory, atomic_write, remove_stale_temporaries
from pe_lightning.png_tree import check_class_names, write_png_tree
from pe_lightning.population import Population

__all__ = ["FINAL_DIR", "MANIFEST", "final_is_complete", "population_digest", "write_final"]

#: The final population's folder inside the output folder.
FINAL_DIR = "final"
#: The file in that folder naming the population it holds.
MANIFEST = "manifest.json"


def population_digest(population: Population) -> str:
    """sha256 (hex) of a population's arrays: images, labels, parents and conditions (by name).

    The population is synthetic data (what the run releases), so its digest is public.
    """
    digest = hashlib.sha256()
    arrays = [("images", population.images), ("labels", population.labels), ("parents", population.parents)]
    arrays += sorted((f"cond__{k}", v) for k, v in population.conditions.items())
    for name, array in arrays:
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()


def _manifest(population: Population, *, iteration: int, png: bool) -> dict:
    return {"iteration": int(iteration), "population_sha256": population_digest(population), "png": bool(png)}


def final_is_complete(directory: str | os.PathLike, *, population: Population, iteration: int, png: bool) -> bool:
    """Whether ``directory`` holds this exact population, completely written.

    Args:
        directory: the final folder (``<output_dir>/final``).
        population: the population the run ended with.
        iteration: the iteration it is the population of.
        png: whether the PNG tree belongs to the output.
    """
    directory = Path(directory)
    try:
        found = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (
        found == _manifest(population, iteration=iteration, png=png)
        and (directory / "population.npz").is_file()
        and (not png or (directory / "images").is_dir())
    )


def write_final(
    directory: str | os.PathLike, *, population: Population, class_names: Sequence[str] | None, iteration: int, png: bool
) -> bool:
    """Write the final population to ``directory`` unless it is already there, complete.

    Temporaries that a killed write left beside and inside ``directory`` are removed first
    (the caller holds the output root, :mod:`pe_lightning.run_lock`). The folder is
    written whole (:func:`~pe_lightning.atomic.atomic_directory`): ``images/`` (with
    ``png``), then ``population.npz``, then ``manifest.json``, then one rename.

    Args:
        directory: the final folder (``<output_dir>/final``).
        population: the final population.
        class_names: folder name of each class, index = label.
        iteration: the iteration the population is of.
        png: also write the PNG tree ``images/<class>/<index>.png``.

    Returns:
        ``True`` when written, ``False`` when the complete folder was already there.

    Raises:
        ValueError: a label without an entry in ``class_names`` (before anything is written).
        OSError: a file cannot be written (the error names it); the previous ``directory``,
            if any, is left as it was and no temporary remains.
    """
    directory = Path(directory)
    remove_stale_temporaries(directory.parent)
    remove_stale_temporaries(directory)
    if final_is_complete(directory, population=population, iteration=iteration, png=png):
        return False
    check_class_names(population.labels, class_names)
    manifest = json.dumps(_manifest(population, iteration=iteration, png=png), indent=2) + "\n"

    def fill(tmp: Path) -> None:
        if png:
            (tmp / "images").mkdir()
            write_png_tree(tmp / "images", images=population.images, labels=population.labels, class_names=class_names)
        population.save_npz(tmp / "population.npz")
        atomic_write(tmp / MANIFEST, lambda path: Path(path).write_text(manifest))

    atomic_directory(directory, fill)
    return True
