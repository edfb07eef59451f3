"""Offline experiment: a DP histogram of the private images' ink mass (mean gray level above the image's darkest), quantile-mapped onto a release."""
import argparse, math, sys
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
from release_checks import accuracies, _fmt
from pe_lightning.data.transfer import MNISTVariantDataModule
from pe_lightning.population import Population
from pe_lightning.privacy import noise_multiplier
from statistics import NormalDist

def stat(images, kind):
    flat = images.reshape(len(images), -1).astype(np.float64)
    dark = flat.min(axis=1)
    if kind == "peak":
        return flat.max(axis=1) - dark, dark
    return (flat - dark[:, None]).mean(axis=1), dark

ap = argparse.ArgumentParser()
ap.add_argument("--variant", default="mnist"); ap.add_argument("--eps", type=float, required=True)
ap.add_argument("--share", type=float, default=0.02); ap.add_argument("--bins", type=int, default=128)
ap.add_argument("--kind", default="mass"); ap.add_argument("--clf-seeds", type=int, nargs="+", default=[0, 1, 2])
ap.add_argument("pops", nargs="+")
a = ap.parse_args()
dm = MNISTVariantDataModule(variant=a.variant, test_size=1000); dm.setup()
mu = 1.0 / noise_multiplier(epsilon=a.eps, iterations=1, delta=1e-5)
sigma = 1.0 / (math.sqrt(a.share) * mu)
width = 256 / a.bins
ps, _ = stat(dm.private_images, a.kind)
h = np.bincount(np.minimum((ps // width).astype(int), a.bins - 1), minlength=a.bins).astype(float)
print(f"{a.variant} eps {a.eps}: sigma_tone {sigma:.1f}; private {a.kind} pct {np.percentile(ps, [5, 50, 95]).round(1)}", flush=True)
fit = dict(datamodule=dm, clf_seeds=a.clf_seeds, epochs=30)
for i, path in enumerate(a.pops):
    rng = np.random.default_rng(100 + i)
    w = np.clip(h + sigma * rng.standard_normal(a.bins) - NormalDist().inv_cdf(1 - 1 / a.bins) * sigma, 0, None)
    pop = Population.load_npz(path)
    q, dark = stat(pop.images, a.kind)
    ranks = np.empty(len(q)); ranks[np.argsort(q, kind="stable")] = np.arange(len(q))
    cdf = np.concatenate([[0.0], np.cumsum(w) / w.sum()])
    t = np.interp((ranks + 0.5) / len(q), cdf, np.linspace(0, 256, a.bins + 1))
    gain = np.where(q > 0, t / np.maximum(q, 1e-9), 1.0)
    x = pop.images.astype(np.float64)
    d = dark[:, None, None, None]
    out = np.clip(np.round(d + (x - d) * gain[:, None, None, None]), 0, 255).astype(np.uint8)
    q2, _ = stat(out, a.kind)
    print(f"{path}: released {a.kind} {q.mean():.1f} -> target {t.mean():.1f}, got {q2.mean():.1f} | {a.kind}-matched {_fmt(accuracies(Population(images=out, labels=pop.labels), **fit))}", flush=True)
