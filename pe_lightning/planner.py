"""Settings of a PE run from public quantities only: the planner (v3).

:func:`plan` picks the voting embedding, ``T``, the population-size schedule, the votes per
private sample ``k'`` (``num_nearest_neighbors``), the threshold and the variation degree
schedule from the privacy budget ``(epsilon, delta)``, the number of classes, the image
size and an *approximate* private-set size that the user states (public knowledge, like
"about 4,000 images"; never the actual private label counts). Nothing it reads is private,
so every setting it returns is public configuration, and a run that uses it has the same
(epsilon, delta) guarantee as one configured by hand.

The rule. Its constants (``MIN_SURVIVORS``, ``NOISE_SURVIVORS``, ``K_CHOICES``,
``MAX_ITERATIONS``, ``RANDOM_FACTOR``, the degrees and the embedding) were chosen
on the MNIST protocol of docs/benchmark.md only, never per data set (docs/results.md):

1. ``m = approx_private_size / num_classes`` private samples vote per class and iteration.
2. ``sigma_T`` = the noise std per bin that the :class:`~pe_lightning.callbacks.PrivacyAccountant`
   calibrates for ``(epsilon, delta, T)`` (the same function, so the two agree exactly).
3. **Threshold** ``H = c * sigma_T`` with ``c = Q^{-1}(NOISE_SURVIVORS / B_0)``: an empty bin's
   noisy count exceeds ``H`` with probability ``Q(c)``, so among the ``B_0 = RANDOM_FACTOR *
   final_samples_per_class`` bins of a class of the RANDOM population, ``NOISE_SURVIVORS``
   (one) is expected to survive on noise alone (``c = 3.09`` for ``B_0 = 1,000``; the v2
   rule's ``2 sigma`` let about 23 per class through, more than half of the survivors at
   epsilon = 1 on MNIST).
4. **Expected true survivors** of a vote, per class: each private sample spreads a total
   weight ``k' * (1 / sqrt(k')) = sqrt(k')`` over ``k'`` bins, so the class's votes hold
   ``m * sqrt(k')`` and at most ``S = m * sqrt(k') / (c * sigma_T)`` bins can reach ``H``
   (the bound is met when every survivor sits just above the threshold; hubness, a few
   bins taking many votes, makes the measured count smaller, docs/diagnostics.md shows
   both). ``S`` is how many distinct parents a vote can hand on.
5. **T**: the largest ``T <= MAX_ITERATIONS`` with ``S(T, max(K_CHOICES)) >= MIN_SURVIVORS``
   (1 when none): evolve only while every vote can still keep ``MIN_SURVIVORS`` distinct
   parents per class. On MNIST every ``T >= 2`` lost at epsilon = 1, where
   ``S(2, 4) = 49`` < 60, and ``T = 6`` won at epsilon = 10 (``S = 212``).
6. **k'**: the smallest of ``K_CHOICES`` with ``S(T, k') >= MIN_SURVIVORS`` (the largest
   when none): extra votes only where the budget is too small for single votes to clear
   the threshold (each extra vote goes to a farther, less similar synthetic image). The
   sensitivity stays 1 (each vote weighs ``1 / sqrt(k')``).
7. Population sizes: the RANDOM population (iteration 0) is ``RANDOM_FACTOR`` times the
   released one; the voted populations of iterations ``1 .. T - 1`` have
   ``final_samples_per_class`` per class, like the released one (the paper's constant
   population; an earlier rule shrank them to ``floor(m / (4 sigma_T))``, 81 per class at
   epsilon = 10, which lost 2.6 points on MNIST, docs/results.md); the
   released population is ``final_samples_per_class`` (``selection="systematic"``: each
   survivor gets its expected share of children).
8. **Embedding**: :data:`EMBEDDING`, a histogram of oriented gradients (9 orientations,
   4 x 4-pixel cells, each cell L2-normalised; public and weight-free) for every budget:
   votes on gradient orientations follow shape, where pixel-L2 votes follow ink mass
   (docs/results.md). An explicit ``embedding=`` replaces it.
9. Variation degrees ``{start: degree_start, end: degree_end}``, interpolated over ``T``.

Monotonicity in epsilon (``tests/test_planner.py`` checks it on a grid): ``T`` never
decreases; for a fixed ``T``, a larger epsilon plans less noise per iteration, a lower
threshold and no more votes per sample (the sizes do not depend on epsilon); wherever ``T >= 2``,
``S >= MIN_SURVIVORS``. The noise *per iteration* jumps up where ``T`` grows (the budget
is split over more votes): that is the rule's intent, evolution is bought only when each
vote still keeps enough survivors.

:class:`PlannedPrivateEvolution` is :class:`~pe_lightning.PrivateEvolution` with its
settings from :func:`plan`, usable from a config (the demo uses it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist

from pe_lightning.apis.base import ImageAPI
from pe_lightning.embeddings.base import Embedding
from pe_lightning.engine.hooks import NoiseMultiplierSource
from pe_lightning.evolution import PrivateEvolution
from pe_lightning.privacy import noise_multiplier as calibrate_noise_multiplier
from pe_lightning.run_config import resolve_class
from pe_lightning.schedules import Schedule

__all__ = ["EMBEDDING", "Plan", "plan", "PlannedPrivateEvolution", "expected_true_survivors", "threshold_sigmas"]

#: Fewest synthetic samples per class the plan releases (``final_samples_per_class``).
MIN_BINS = 10
#: Most iterations the rule plans (rule step 5): T = 6 was the best measured on MNIST at epsilon = 10 (issue 23).
MAX_ITERATIONS = 6
#: Fewest expected true survivors per class a vote must keep for the rule to plan it (rule step 5).
MIN_SURVIVORS = 60.0
#: Votes per private sample the rule may choose (rule step 6).
K_CHOICES = (1, 2, 4)
#: Expected noise-only survivors per class of the RANDOM population at the threshold (rule step 3).
NOISE_SURVIVORS = 1.0
#: The RANDOM population (iteration 0) is this many times the released one (rule step 7).
RANDOM_FACTOR = 5
#: How parents are chosen from the noisy counts (:mod:`pe_lightning.engine.selection`).
SELECTION = "systematic"
#: Variation degree at iteration 1 and at iteration T (rule step 9; DrawText units).
DEGREE_START, DEGREE_END = 0.3, 0.1
#: The voting embedding of the plan (rule step 8), as a config entry.
EMBEDDING = {"class_path": "pe_lightning.embeddings.HOGEmbedding",
             "init_args": {"orientations": 9, "pixels_per_cell": 4, "cells_per_block": 1, "block_norm": "L2"}}


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` returns: the PE settings and the quantities they came from.

    Attributes:
        iterations: ``T``.
        num_samples_schedule: synthetic samples per class at iterations ``0 .. T``.
        threshold: ``H``, in votes (``threshold_sigmas * noise_multiplier``).
        variation_degrees: ``{"start": a, "end": b}``.
        noise_multiplier: ``sigma_T``, the noise std per bin the accountant will calibrate.
        bins_per_class: samples per class of the voted populations between the RANDOM and the
            released one (iterations ``1 .. T - 1``; none when ``T = 1``).
        num_nearest_neighbors: ``k'``, votes per private sample.
        threshold_sigmas: ``c``, the threshold in noise stds.
        expected_true_survivors: ``S = m sqrt(k') / (c sigma_T)`` per class (rule step 4;
            ``inf`` without noise).
        expected_noise_survivors: noise-only survivors per class of the RANDOM population,
            ``B_0 Q(c)`` (rule step 3).
        embedding: the voting embedding as a config entry (``class_path``, ``init_args``).
    """

    iterations: int
    num_samples_schedule: list[int]
    threshold: float
    variation_degrees: dict[str, float]
    noise_multiplier: float
    bins_per_class: int
    num_nearest_neighbors: int = 1
    threshold_sigmas: float = 0.0
    expected_true_survivors: float = math.inf
    expected_noise_survivors: float = 0.0
    embedding: dict = field(default_factory=lambda: copy.deepcopy(EMBEDDING))

    def model_kwargs(self) -> dict:
        """The :class:`~pe_lightning.PrivateEvolution` arguments of this plan (without the embedding)."""
        return dict(iterations=self.iterations, num_samples_schedule=list(self.num_samples_schedule),
                    threshold=self.threshold, variation_degrees=dict(self.variation_degrees),
                    num_nearest_neighbors=self.num_nearest_neighbors)

    def make_embedding(self) -> Embedding:
        """A new instance of the plan's embedding."""
        cls = resolve_class(self.embedding["class_path"])
        if cls is None:
            raise ValueError(f"the plan's embedding class_path {self.embedding['class_path']!r} cannot be imported")
        return cls(**dict(self.embedding.get("init_args") or {}))

    def as_dict(self) -> dict:
        return asdict(self)


def _sigma(epsilon: float, iterations: int, delta: float) -> float:
    return calibrate_noise_multiplier(epsilon=epsilon, iterations=iterations, delta=delta)


def threshold_sigmas(random_bins_per_class: int) -> float:
    """``c = Q^{-1}(NOISE_SURVIVORS / B_0)`` (rule step 3): ``NOISE_SURVIVORS`` expected noise-only survivors among ``B_0`` empty bins."""
    tail = NOISE_SURVIVORS / random_bins_per_class
    return float(NormalDist().inv_cdf(1.0 - tail)) if tail < 0.5 else 0.0


def expected_true_survivors(*, votes_per_class: float, num_nearest_neighbors: int, threshold_sigmas: float,
                            noise_multiplier: float) -> float:
    """``S = m sqrt(k') / (c sigma)`` (rule step 4): bins per class the votes' total weight can lift over ``H = c sigma``."""
    if noise_multiplier == 0 or threshold_sigmas == 0:
        return math.inf
    return votes_per_class * math.sqrt(num_nearest_neighbors) / (threshold_sigmas * noise_multiplier)


def plan(
    *,
    epsilon: float,
    delta: float,
    num_classes: int,
    image_size: int,
    approx_private_size: int,
    final_samples_per_class: int = 200,
    iterations: int | None = None,
    noise_multiplier: float | None = None,
) -> Plan:
    """The documented default settings for a budget (module docstring: the rule).

    Args:
        epsilon: the run's total epsilon (``math.inf``: no noise, not private).
        delta: the run's delta.
        num_classes: classes of the private data (public: the label set).
        image_size: side of the images, pixels. The rule does not depend on it (the
            histogram's sensitivity and counts do not); it is part of the signature so
            that a future rule may, and is checked.
        approx_private_size: the user's public estimate of the private-set size (a round
            number is enough; never computed from the private data).
        final_samples_per_class: synthetic samples per class of the released population.
        iterations: ``T`` chosen by the user instead of the rule's (``k'``, the threshold
            and the sizes then follow that ``T``).
        noise_multiplier: the sigma the run's accountant states for the iterations to come
            (:class:`PlannedPrivateEvolution` passes it when the fit starts, so the plan
            follows the noise actually used, e.g. a resume's remaining budget); ``None``:
            ``sigma_T`` calibrated for ``(epsilon, delta, T)`` (rule step 2).

    Returns:
        The :class:`Plan`.

    Raises:
        ValueError: an argument out of range.
    """
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if not (isinstance(image_size, int) and image_size >= 1):
        raise ValueError(f"image_size must be an int >= 1, got {image_size!r}")
    if not (isinstance(approx_private_size, int) and approx_private_size >= num_classes):
        raise ValueError(f"approx_private_size must be an int >= num_classes, got {approx_private_size!r}")
    if not (isinstance(final_samples_per_class, int) and final_samples_per_class >= MIN_BINS):
        raise ValueError(f"final_samples_per_class must be an int >= {MIN_BINS}, got {final_samples_per_class!r}")
    if iterations is not None and not (isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 1):
        raise ValueError(f"iterations must be None or an int >= 1, got {iterations!r}")
    per_class = approx_private_size / num_classes
    random_bins = RANDOM_FACTOR * final_samples_per_class
    c = threshold_sigmas(random_bins)

    def survivors(t: int, k: int) -> float:
        return expected_true_survivors(votes_per_class=per_class, num_nearest_neighbors=k, threshold_sigmas=c,
                                       noise_multiplier=_sigma(epsilon, t, delta))

    if iterations is None:  # rule step 5: the largest T whose votes keep MIN_SURVIVORS
        iterations = max([t for t in range(1, MAX_ITERATIONS + 1) if survivors(t, max(K_CHOICES)) >= MIN_SURVIVORS], default=1)
    k = min([k for k in K_CHOICES if survivors(iterations, k) >= MIN_SURVIVORS], default=max(K_CHOICES))  # step 6
    # the noise actually used (the accountant's, when the fit starts) sets the threshold
    sigma = _sigma(epsilon, iterations, delta) if noise_multiplier is None else float(noise_multiplier)
    bins = final_samples_per_class  # rule step 7: the voted populations keep the released size
    schedule = [random_bins] + [bins] * (iterations - 1) + [final_samples_per_class]
    return Plan(
        iterations=iterations, num_samples_schedule=schedule, threshold=float(c * sigma),
        variation_degrees={"start": DEGREE_START, "end": DEGREE_END}, noise_multiplier=float(sigma),
        bins_per_class=bins, num_nearest_neighbors=k, threshold_sigmas=c,
        expected_true_survivors=float(expected_true_survivors(votes_per_class=per_class, num_nearest_neighbors=k,
                                                              threshold_sigmas=c, noise_multiplier=sigma)),
        expected_noise_survivors=float(random_bins * NormalDist().cdf(-c)) if sigma > 0 else 0.0,
    )


class PlannedPrivateEvolution(PrivateEvolution):
    """:class:`~pe_lightning.PrivateEvolution` whose embedding, ``T``, size schedule,
    ``num_nearest_neighbors``, threshold and degree schedule come from :func:`plan` (public
    quantities only).

    **One budget.** The run's budget is the ``PrivacyAccountant``'s ``(epsilon, delta)``,
    stated once (``python -m pe_lightning`` fills ``epsilon``/``delta`` here from it, and
    ``--epsilon``/``--delta`` set it). ``epsilon`` is read only to plan ``T`` (rule steps 4-5);
    the setting that depends on the noise (the threshold, rule step 3) is planned when the
    fit starts from the sigma the run's
    :class:`~pe_lightning.engine.hooks.NoiseMultiplierSource` states for the next iteration,
    the sigma that iteration is released with. A resumed run that asks for more iterations or
    a larger budget is therefore re-planned from the remaining budget (or refused by the
    accountant's :class:`~pe_lightning.callbacks.PrivacyBudgetExceededError`), like any
    ``PrivateEvolution``. A fresh run whose accountant states another budget than the one
    given here is refused before anything is spent.

    Args:
        api: the foundation-model API.
        embedding: the voting embedding; ``None`` (default): the plan's (:data:`EMBEDDING`).
        approx_private_size: the user's public estimate of the private-set size.
        num_classes: classes of the private data.
        epsilon: the accountant's epsilon (``None``: filled by ``python -m pe_lightning``;
            needed in Python unless ``iterations`` is given).
        delta: the accountant's delta (``None``: filled like ``epsilon``; ``1e-5`` otherwise).
        image_size: image side, pixels (default: ``api.image_size``).
        final_samples_per_class: synthetic samples per class released (default 200).
        iterations: ``T`` instead of the plan's (the plan's schedule and noise follow it).
        num_samples_per_class, num_samples_schedule, variation_degrees, threshold: set
            explicitly, each replaces the plan's (``num_samples_per_class`` replaces its
            size schedule); ``None``: the plan's.
        num_nearest_neighbors: votes per private sample; ``None`` (default): the plan's ``k'``.
        lookahead_degree, seed, noise, reuse_lookahead, output_dir,
            save_png, search_backend, api_batch_size: as in :class:`~pe_lightning.PrivateEvolution`.
        selection: as in :class:`~pe_lightning.PrivateEvolution` (default the plan's
            ``"systematic"``: every survivor of the threshold gets its expected share).
        **kwargs: any other :class:`~pe_lightning.PrivateEvolution` argument (``distance``,
            ``population_path`` to evaluate a saved population, ``private_state_dir``, ...).
    """

    def __init__(
        self,
        *,
        api: ImageAPI,
        embedding: Embedding | None = None,
        approx_private_size: int,
        num_classes: int,
        epsilon: float | None = None,
        delta: float | None = None,
        image_size: int | None = None,
        final_samples_per_class: int = 200,
        lookahead_degree: int = 8,
        num_nearest_neighbors: int | None = None,
        seed: int = 0,
        noise: str = "secret",
        reuse_lookahead: bool = True,
        output_dir: str | None = None,
        save_png: bool = True,
        search_backend: str = "auto",
        api_batch_size: int = 4096,
        iterations: int | None = None,
        num_samples_per_class: int | list[int] | None = None,
        num_samples_schedule: list[int] | dict[str, float] | None = None,
        variation_degrees: Schedule | None = None,
        threshold: float | None = None,
        selection: str = SELECTION,
        **kwargs,
    ) -> None:
        if epsilon is None and iterations is None:
            raise ValueError(
                "PlannedPrivateEvolution needs the run's epsilon to plan T: give the PrivacyAccountant's epsilon "
                "(python -m pe_lightning fills it from the config's PrivacyAccountant), or iterations"
            )
        size = image_size if image_size is not None else int(getattr(api, "image_size", 0) or 0)
        self.budget = (epsilon, delta)  # what T was planned for; checked against the accountant's when the fit starts
        self._plan_inputs = dict(
            epsilon=math.inf if epsilon is None else epsilon, delta=1e-5 if delta is None else delta,
            num_classes=num_classes, image_size=size, approx_private_size=approx_private_size,
            final_samples_per_class=final_samples_per_class,
        )
        # Provisional until the fit starts (on_fit_start re-plans the noise-dependent settings from the stated sigma).
        self.plan = plan(**self._plan_inputs, iterations=iterations)
        self._explicit = {"sizes": num_samples_per_class is not None or num_samples_schedule is not None,
                          "threshold": threshold is not None}
        settings = self.plan.model_kwargs()
        if num_samples_per_class is not None:
            settings.pop("num_samples_schedule")
            settings["num_samples_per_class"] = num_samples_per_class
        for name, value in (("num_samples_schedule", num_samples_schedule), ("variation_degrees", variation_degrees),
                            ("threshold", threshold), ("num_nearest_neighbors", num_nearest_neighbors)):
            if value is not None:
                settings[name] = value
        super().__init__(api=api, embedding=embedding if embedding is not None else self.plan.make_embedding(),
                         **settings, lookahead_degree=lookahead_degree, seed=seed, noise=noise,
                         reuse_lookahead=reuse_lookahead, output_dir=output_dir, save_png=save_png,
                         search_backend=search_backend, api_batch_size=api_batch_size, selection=selection, **kwargs)
        for budget_field in ("epsilon", "delta"):  # the budget is the accountant's (in the checkpoint's ledger), not a hyperparameter:
            self.hparams.pop(budget_field, None)  # LightningCLI would re-apply it from a checkpoint against the accountant's
        self.planned_num_classes = num_classes

    @classmethod
    def planned_iterations(cls, init_args) -> int:
        """``T`` of the plan for a config's ``init_args`` (``python -m pe_lightning`` sets ``max_epochs`` from it)."""
        get = init_args.get if hasattr(init_args, "get") else (lambda k, d=None: getattr(init_args, k, d))
        if get("iterations") is not None:
            return int(get("iterations"))
        if get("epsilon") is None:
            raise ValueError(
                "PlannedPrivateEvolution plans T from the run's budget, and this config states none: add a "
                "pe_lightning.callbacks.PrivacyAccountant to trainer.callbacks (or set model.init_args.iterations)"
            )
        api = get("api")
        size = get("image_size")
        if size is None:
            api_args = getattr(api, "init_args", None) or (api.get("init_args") if isinstance(api, dict) else None)
            size = (api_args.get("image_size") if api_args is not None else None) or 28
        return plan(epsilon=float(get("epsilon")), delta=float(get("delta", 1e-5) or 1e-5),
                    num_classes=int(get("num_classes")), image_size=int(size),
                    approx_private_size=int(get("approx_private_size")),
                    final_samples_per_class=int(get("final_samples_per_class", 200) or 200)).iterations

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and len(self.class_names) != self.planned_num_classes:
            raise ValueError(
                f"PlannedPrivateEvolution was planned for num_classes={self.planned_num_classes}, but the data has "
                f"{len(self.class_names)} classes {self.class_names}"
            )

    def on_fit_start(self) -> None:
        # After any checkpoint is restored: the source states sigma from what is left of the budget (or refuses).
        sigma = self.stated_noise_multiplier()
        if sigma is not None:
            self._check_budget_matches_the_accountant()
            self._plan_from_noise(sigma)
        super().on_fit_start()

    def configured_sizes(self) -> dict:
        """The sizes as configured: the plan's public inputs, not the schedule it derives from ``T``.

        A resume that asks for more iterations or a larger budget re-plans that schedule (like
        ``PrivateEvolution`` with the same ``num_samples_per_class``); changing what the user
        configured (``final_samples_per_class``, ``approx_private_size``, explicit sizes) still
        changes the run's fingerprint.
        """
        sizes = super().configured_sizes()
        if not self._explicit["sizes"]:
            sizes["schedule"] = {k: self._plan_inputs[k] for k in ("final_samples_per_class", "approx_private_size")}
        return sizes

    def _check_budget_matches_the_accountant(self) -> None:
        """Refuse a run whose accountant states another budget than the one ``T`` was planned for."""
        epsilon, delta = self.budget
        sources = [cb for cb in self.trainer.callbacks if isinstance(cb, NoiseMultiplierSource)]
        stated = [(getattr(s, "epsilon", None), getattr(s, "delta", None), type(s).__name__) for s in sources]
        for source_eps, source_delta, name in stated:
            for budget_field, mine, theirs in (("epsilon", epsilon, source_eps), ("delta", delta, source_delta)):
                if mine is not None and theirs is not None and float(mine) != float(theirs):
                    raise ValueError(
                        f"PlannedPrivateEvolution {budget_field}={mine:g} but the run's {name} has {budget_field}={theirs:g}: state "
                        "the budget once, on the accountant (python -m pe_lightning: --epsilon/--delta, or the "
                        "PrivacyAccountant's init_args); the planner reads it from there"
                    )

    def _plan_from_noise(self, sigma: float) -> None:
        """Re-plan the setting that depends on the noise, the threshold, for ``sigma``.

        The size schedule depends only on ``T`` and the configured sizes (rule step 7), which
        are fixed when the module is built, so the sizes ``setup`` computed from it stand.
        """
        self.plan = plan(**self._plan_inputs, iterations=self.iterations, noise_multiplier=sigma)
        if not self._explicit["threshold"]:
            self.engine.settings = replace(self.engine.settings, threshold=self.plan.threshold)
