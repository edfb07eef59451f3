"""The next population: the selected parents' children, reusing lookahead variations.

With ``reuse_lookahead`` the ``m``-th selection of a parent (in slot order) takes its
``m``-th lookahead variation; fresh variations are made only when a parent is selected
more than ``lookahead_degree`` times. The lookahead variations were drawn from the
previous (already private) population and are chosen by the noisy histogram, so this is
post-processing: the privacy guarantee is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pe_lightning.apis.base import APIOutput
from pe_lightning.population import Population
from pe_lightning.seeding import make_generator

if TYPE_CHECKING:  # pragma: no cover
    from pe_lightning.engine.core import PEEngine

__all__ = ["children", "next_population", "reuse_plan"]


def reuse_plan(parents: np.ndarray, *, lookahead_degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Which children come from stored lookahead variations.

    Args:
        parents: ``(n,)`` the selected parent of each child slot.
        lookahead_degree: ``k``, stored variations per parent.

    Returns:
        ``(reuse, occurrence)``: ``reuse[j]`` whether slot ``j`` takes a stored variation,
        ``occurrence[j]`` which one (the how-many-th selection of its parent, 0-based).
    """
    n = len(parents)
    order = np.argsort(parents, kind="stable")
    sorted_parents = parents[order]
    occurrence = np.zeros(n, dtype=np.int64)
    occurrence[order] = np.arange(n) - np.searchsorted(sorted_parents, sorted_parents, side="left")
    return occurrence < lookahead_degree, occurrence


def children(engine: "PEEngine", pop: Population, parents: np.ndarray, *, iteration: int) -> tuple[APIOutput, int]:
    """One variation of each selected parent: reused lookahead variations, fresh ones otherwise.

    Each rank contributes the reused children whose parents' lookahead it made and its
    chunks of the fresh ones; the parts are assembled on every rank.

    Returns:
        The children's images and conditions (in ``parents`` order) and the number taken
        from the lookahead variations.
    """
    n = len(parents)
    if n == 0:  # variations_per_parent=0 with keep_selected: the next population is the selected parents
        return APIOutput(images=pop.images[:0].copy(), conditions={k: v[:0] for k, v in pop.conditions.items()}), 0
    store = engine.lookahead_store
    if store is not None:
        reuse, occurrence = reuse_plan(parents, lookahead_degree=engine.settings.lookahead_degree)
    else:
        reuse, occurrence = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    parts = []
    rank, world, chunk = engine.collective.rank, engine.collective.world_size, engine.settings.api_batch_size
    reused_slots = np.flatnonzero(reuse)
    mine = reused_slots[(parents[reused_slots] // chunk) % world == rank]  # parents whose lookahead this rank made
    if len(mine):
        parts.append((mine, store.take(occurrence[mine], parents[mine])))
    fresh_slots = np.flatnonzero(~reuse)
    if len(fresh_slots):
        selected = pop.take(parents[fresh_slots])
        with engine.timed("api"), engine.timed("api_variation"):
            for i, sl in engine.chunks("variation", len(fresh_slots)):
                gen = make_generator(engine.settings.seed, iteration, "variation", 0, i)
                parts.append((fresh_slots[sl], engine.variation(selected, sl, iteration=iteration, generator=gen)))
    return engine.assemble(parts, n=n, name="population"), len(reused_slots)


def next_population(
    pop: Population, children: APIOutput, child_parents: np.ndarray, parents: np.ndarray, *, keep_selected: bool
) -> Population:
    """The children, plus the selected parents themselves with ``keep_selected``, grouped by class."""
    if not keep_selected:
        return Population(images=children.images, labels=pop.labels[child_parents], conditions=children.conditions, parents=child_parents)
    kept = pop.take(parents)
    all_parents = np.concatenate([child_parents, parents])
    order = np.argsort(pop.labels[all_parents], kind="stable")  # per class: children first, then the kept parents
    images = np.concatenate([children.images, kept.images])[order]
    conditions = {k: np.concatenate([v, kept.conditions[k]])[order] for k, v in children.conditions.items()}
    return Population(images=images, labels=pop.labels[all_parents][order], conditions=conditions, parents=all_parents[order])
