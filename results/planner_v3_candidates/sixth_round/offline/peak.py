"""Offline experiment: a DP histogram of private peak gray levels, quantile-mapped onto a release."""
import argparse, math, sys
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
from release_checks import accuracies, _fmt, stretch_contrast
from pe_lightning.data.transfer import MNISTVariantDataModule
from pe_lightning.population import Population
from pe_lightning.privacy import noise_multiplier

def peaks(images):
    return images.reshape(len(images), -1).max(axis=1).astype(np.int64)

def dp_hist(p, *, bins, sigma, thr, rng):
    h = np.bincount(p * bins // 256, minlength=bins).astype(float)
    noisy = h + sigma * rng.standard_normal(bins)
    return np.clip(noisy - thr * sigma, 0, None)

def quantile_map(images, hist):
    bins = len(hist)
    q = peaks(images).astype(float)
    n = len(q)
    u = (np.argsort(np.argsort(q, kind="stable"), kind="stable") + 0.5) / n
    cdf = np.concatenate([[0.0], np.cumsum(hist) / hist.sum()])
    edges = np.linspace(0, 256, bins + 1)
    t = np.interp(u, cdf, edges) - 0.5
    t = np.clip(t, 1, 255)
    scale = t / np.maximum(q, 1)
    return np.clip(np.round(images * scale[:, None, None, None]), 0, 255).astype(np.uint8), t

ap = argparse.ArgumentParser()
ap.add_argument("--variant", default="mnist"); ap.add_argument("--eps", type=float, required=True)
ap.add_argument("--share", type=float, default=0.02); ap.add_argument("--bins", type=int, default=32)
ap.add_argument("--thr", type=float, default=2.0); ap.add_argument("--stretch", action="store_true")
ap.add_argument("--skip-released", action="store_true")
ap.add_argument("pops", nargs="+")
a = ap.parse_args()
dm = MNISTVariantDataModule(variant=a.variant, test_size=1000); dm.setup()
mu = 1.0 / noise_multiplier(epsilon=a.eps, iterations=1, delta=1e-5)
sigma = 1.0 / (math.sqrt(a.share) * mu)
pp = peaks(dm.private_images)
print(f"{a.variant} eps {a.eps}: mu {mu:.3f} sigma_peak {sigma:.1f}", flush=True)
fit = dict(datamodule=dm, clf_seeds=[0, 1, 2], epochs=30)
for i, path in enumerate(a.pops):
    pop = Population.load_npz(path)
    hist = dp_hist(pp, bins=a.bins, sigma=sigma, thr=a.thr, rng=np.random.default_rng(100 + i))
    mapped, t = quantile_map(pop.images, hist)
    line = f"{path}: released peak {peaks(pop.images).mean():.0f} -> {t.mean():.0f} | as released {'-' if a.skip_released else _fmt(accuracies(pop, **fit))} | dp-peak {_fmt(accuracies(Population(images=mapped, labels=pop.labels), **fit))}"
    if a.stretch:
        line += f" | stretch {_fmt(accuracies(Population(images=stretch_contrast(pop.images), labels=pop.labels), **fit))}"
    print(line, flush=True)
