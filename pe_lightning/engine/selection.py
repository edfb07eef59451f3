"""Parent selection from the thresholded noisy counts: a registry of named strategies.

The strategies, the one place their names are documented (``selection:`` in a config):

* ``"sample"`` (the paper's and the reference's default): each class draws its ``n_c``
  parents with replacement, with probability proportional to the weights.
* ``"rank"``: the ``n_c`` largest weights of the class (ties broken by index), each
  parent once.
* ``"systematic"``: each bin gets its expected number of children under ``"sample"``,
  ``n_c w_i / sum(w)``, rounded by largest remainders (deterministic, no multinomial
  noise: a low-count survivor of the threshold is not lost by chance).

Each reads only the noisy histogram (after the threshold) and public configuration, so
selection is post-processing: no privacy cost (docs/design.md §2.4). A class whose weights
are all zero is drawn uniformly with a :class:`ZeroHistogramWarning`; still post-processing.
A new strategy is one function registered with :func:`register_selection`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = [
    "SELECTION_MODES",
    "SELECTION_STRATEGIES",
    "SelectionStrategy",
    "ZeroHistogramWarning",
    "check_selection",
    "register_selection",
    "select_parents",
]


class ZeroHistogramWarning(UserWarning):
    """All noisy counts of a class are zero after thresholding; selection falls back to uniform."""


#: ``choose(weights, n, generator=, class_name=)``: ``n`` int64 positions into ``weights``
#: (float64 ``(len,)``, >= 0, positive sum) for one class.
Choose = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class SelectionStrategy:
    """One named way to choose a class's parents from its weights.

    Attributes:
        name: the ``selection`` value that picks it.
        choose: ``(weights, n, *, generator, class_name) -> (n,) int64`` positions.
        random_fallback: with all-zero weights, rank a uniform random draw instead of
            equal weights (a strategy that would otherwise pick by index).
    """

    name: str
    choose: Choose
    random_fallback: bool = False


#: Every registered strategy by name (see the module docstring).
SELECTION_STRATEGIES: dict[str, SelectionStrategy] = {}


def register_selection(name: str, *, random_fallback: bool = False) -> Callable[[Choose], Choose]:
    """Register ``choose`` as the selection strategy ``name`` (a decorator)."""

    def register(choose: Choose) -> Choose:
        if name in SELECTION_STRATEGIES:
            raise ValueError(f"selection strategy {name!r} is already registered")
        SELECTION_STRATEGIES[name] = SelectionStrategy(name=name, choose=choose, random_fallback=random_fallback)
        return choose

    return register


@register_selection("sample")
def _sample(weights: torch.Tensor, n: int, *, generator: torch.Generator, class_name: str) -> torch.Tensor:
    return torch.multinomial(weights, n, replacement=True, generator=generator)


@register_selection("rank", random_fallback=True)
def _rank(weights: torch.Tensor, n: int, *, generator: torch.Generator, class_name: str) -> torch.Tensor:
    if n > len(weights):
        raise ValueError(
            f"class {class_name!r}: selection 'rank' takes {n} distinct parents but the class has only "
            f"{len(weights)} synthetic samples"
        )
    return torch.sort(weights, descending=True, stable=True).indices[:n]


@register_selection("systematic")
def _systematic(weights: torch.Tensor, n: int, *, generator: torch.Generator, class_name: str) -> torch.Tensor:
    # Expected counts of "sample" without its multinomial noise: n * w / sum(w), floored, the
    # remainder to the largest fractional parts (ties by index). Every bin above the threshold
    # with a share >= 1 / n gets children; no parent is lost to sampling.
    exact = weights / weights.sum() * n
    counts = torch.floor(exact).to(torch.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        counts[torch.sort(exact - counts, descending=True, stable=True).indices[:rest]] += 1
    return torch.repeat_interleave(torch.arange(len(weights)), counts)


#: The registered strategy names (valid ``selection`` values).
SELECTION_MODES = tuple(SELECTION_STRATEGIES)


def check_selection(name: str, *, field: str = "selection") -> SelectionStrategy:
    """The strategy registered as ``name``.

    Raises:
        ValueError: naming ``field`` and the registered names.
    """
    if name not in SELECTION_STRATEGIES:
        raise ValueError(f"{field} must be one of {tuple(SELECTION_STRATEGIES)}, got {name!r}")
    return SELECTION_STRATEGIES[name]


def select_parents(
    *,
    weights: torch.Tensor,
    labels: torch.Tensor,
    num_per_class: Sequence[int],
    generator: torch.Generator,
    class_names: Sequence[str] | None = None,
    mode: str = "sample",
) -> torch.Tensor:
    """Choose parents within each class from the thresholded noisy counts (post-processing).

    Args:
        weights: float ``(N,)`` thresholded noisy counts, >= 0.
        labels: int64 ``(N,)`` class of each synthetic sample.
        num_per_class: how many parents to draw for each class (public configuration).
        generator: CPU generator of the public selection stream.
        class_names: for messages.
        mode: a registered strategy name (module docstring).

    Returns:
        int64 ``(sum(num_per_class),)`` indices into the population, grouped by class in
        label order.
    """
    strategy = check_selection(mode, field="selection mode")
    weights = weights.detach().cpu().to(torch.float64)
    labels = labels.detach().cpu()
    if torch.isnan(weights).any() or (weights < 0).any():
        raise ValueError("selection weights must be >= 0 and not NaN")
    out = []
    for c, n_c in enumerate(num_per_class):
        if n_c == 0:
            continue
        idx = torch.nonzero(labels == c).flatten()
        name = class_names[c] if class_names is not None else str(c)
        if len(idx) == 0:
            raise ValueError(f"class {name!r} has no synthetic samples to select {n_c} parents from")
        w = weights[idx]
        if float(w.sum()) <= 0.0:
            warnings.warn(
                f"class {name!r}: all {len(idx)} thresholded noisy counts are zero; selecting parents "
                "uniformly (post-processing, no extra privacy cost). Lower the threshold or raise epsilon.",
                ZeroHistogramWarning,
                stacklevel=2,
            )
            w = torch.ones_like(w)
            if strategy.random_fallback:  # no information to rank by: a uniform draw without replacement
                w = torch.rand(len(idx), generator=generator, dtype=torch.float64)
        out.append(idx[strategy.choose(w, n_c, generator=generator, class_name=name)])
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)
