"""What limits a released population's downstream accuracy: checks on the development data.

    python benchmarks/release_checks.py params  POP.npz [POP.npz ...]
    python benchmarks/release_checks.py stretch --variant small POP.npz [POP.npz ...]
    python benchmarks/release_checks.py real    --variant small --per-class 200

``POP.npz`` is a population written by a run (``<output_dir>/final/population.npz``, e.g. under
``benchmarks/results.py``'s ``runs/``). Each subcommand answers one question of
docs/results.md's fifth round:

- ``params``: what the vote selected. Mean and std of each DrawText condition of the released
  samples (public: the release and its conditions), next to the same statistics of DrawText's
  RANDOM prior, so a parameter the vote does not see keeps the prior's.
- ``stretch``: does the ink level matter? The protocol's classifier on the population as
  released and with each image's gray levels stretched so that its brightest pixel is 255
  (per-image post-processing that uses only the image format).
- ``real``: what the released size alone allows. The classifier on the first ``--per-class``
  real images per class of the set's private split.

The classifier is docs/benchmark.md's (SmallCNN, 30 epochs, 1,000 real held-out digits; the
``--clf-seeds``, 0 1 2 by default), the data the MNIST protocol's or a transfer variant's
(:mod:`pe_lightning.data.transfer`). An experiment script on the project's development sets,
not part of the installed library: it reads the private split of those public data sets, which
a run on real private data must never do.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from pe_lightning.apis.drawtext.parameters import CONTINUOUS, PRIORS
from pe_lightning.callbacks.downstream import DownstreamEvaluation
from pe_lightning.data.transfer import VARIANTS, MNISTVariantDataModule
from pe_lightning.population import Population


def stretch_contrast(images: np.ndarray) -> np.ndarray:
    """Each image's gray levels scaled so that its brightest pixel is 255 (all-black images unchanged).

    Args:
        images: uint8 ``(N, H, W, C)``.

    Returns:
        uint8 ``(N, H, W, C)``.
    """
    peak = images.reshape(len(images), -1).max(axis=1).astype(np.float64)
    scale = 255.0 / np.maximum(peak, 1.0)
    return np.clip(np.round(images * scale[:, None, None, None]), 0, 255).astype(np.uint8)


def accuracies(pop: Population, *, datamodule, clf_seeds: Sequence[int], epochs: int) -> list[float]:
    """Test accuracy (fraction) of the protocol's classifier trained on ``pop``, one per classifier seed."""
    return [DownstreamEvaluation(max_epochs=epochs, val_fraction=0.0, seed=s).evaluate(pop, datamodule=datamodule)[0]
            for s in clf_seeds]


def _fmt(accs: Sequence[float]) -> str:
    return f"{100 * np.mean(accs):.1f} ({', '.join(f'{100 * a:.1f}' for a in accs)})"


def prior_moments(name: str, prior: str = "public") -> tuple[float, float] | None:
    """Mean and std of a continuous DrawText condition under RANDOM (uniform over the prior's range).

    ``None`` for ``stroke``, whose range depends on the stroke mode.
    """
    key = {"size": "size_range", "aspect": "aspect_range", "rotation": "rotation_range", "shear": "shear_range",
           "blur": "blur_range", "intensity": "intensity_range", "dx": "translate_range", "dy": "translate_range"}.get(name)
    if key is None:
        return None
    lo, hi = PRIORS[prior][key]
    return (lo + hi) / 2, (hi - lo) / np.sqrt(12.0)


def main(argv: Sequence[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_params = sub.add_parser("params", help="released DrawText conditions against the RANDOM prior")
    p_params.add_argument("populations", nargs="+", type=Path)
    for name in ("stretch", "real"):
        p = sub.add_parser(name)
        p.add_argument("--variant", default="mnist", choices=list(VARIANTS))
        p.add_argument("--clf-seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--epochs", type=int, default=30)
        p.add_argument("--test-size", type=int, default=1000)
        if name == "stretch":
            p.add_argument("populations", nargs="+", type=Path)
        else:
            p.add_argument("--per-class", type=int, required=True)
    args = parser.parse_args(argv)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    if args.command == "params":
        for path in args.populations:
            cond = Population.load_npz(path).conditions
            missing = [c for c in CONTINUOUS if c not in cond]
            if missing:
                raise ValueError(f"{path}: no DrawText conditions {missing} (a DrawText run's population is needed)")
            parts = []
            for c in CONTINUOUS:
                moments = prior_moments(c)
                prior = "" if moments is None else f" (prior {moments[0]:.2f} ± {moments[1]:.2f})"
                parts.append(f"{c} {cond[c].mean():.2f} ± {cond[c].std():.2f}{prior}")
            say(f"{path}: " + "; ".join(parts))
        return lines
    dm = MNISTVariantDataModule(variant=args.variant, test_size=args.test_size)
    dm.setup()
    fit = dict(datamodule=dm, clf_seeds=args.clf_seeds, epochs=args.epochs)
    if args.command == "stretch":
        for path in args.populations:
            pop = Population.load_npz(path)
            stretched = Population(images=stretch_contrast(pop.images), labels=pop.labels)
            say(f"{path} [{args.variant}]: as released {_fmt(accuracies(pop, **fit))} | "
                f"contrast-stretched {_fmt(accuracies(stretched, **fit))}")
    else:
        if args.per_class < 1:
            parser.error("--per-class must be >= 1")
        labels = dm.private_labels
        keep = np.concatenate([np.flatnonzero(labels == c)[: args.per_class] for c in np.unique(labels)])
        real = Population(images=dm.private_images[keep], labels=labels[keep])
        say(f"{args.variant}: real private images, {args.per_class} per class ({len(real)}): {_fmt(accuracies(real, **fit))}")
    return lines


if __name__ == "__main__":
    main()
