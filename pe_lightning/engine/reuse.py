"""The next population from the selected parents' children, and which children reuse lookahead variations.

Pure functions: the engine makes the children (:meth:`pe_lightning.engine.PEEngine.children`).

With ``reuse_lookahead`` the ``m``-th selection of a parent (in slot order) takes its
``m``-th lookahead variation; fresh variations are made only when a parent is selected
more than ``lookahead_degree`` times. The lookahead variations were drawn from the
previous (already private) population and are chosen by the noisy histogram, so this is
post-processing: the privacy guarantee is unchanged.
"""

from __future__ import annotations

import numpy as np

from pe_lightning.apis.base import APIOutput
from pe_lightning.population import Population

__all__ = ["next_population", "reuse_plan"]


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
