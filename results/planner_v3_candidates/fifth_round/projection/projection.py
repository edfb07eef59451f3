"""Diagnostic only, NOT private: project each of N real images per class of a development set onto
DrawText by hill-climbing in HOG distance (RANDOM candidates, then rounds of VARIATION keeping each
image's best), and train the protocol's classifier on the projections. Measures what DrawText's
glyphs can reach on a set when the search is per image and exact (issue 23 did this on MNIST: 90 %).

    python projection.py VARIANT PER_CLASS CANDIDATES_PER_CLASS ROUNDS VARIATIONS   # PROJ_EMB=pixel: pixel distance
"""
import sys, time
import numpy as np
import torch
from pe_lightning.apis import DrawText
from pe_lightning.callbacks.downstream import DownstreamEvaluation
from pe_lightning.data.transfer import MNISTVariantDataModule
from pe_lightning.embeddings import HOGEmbedding, PixelEmbedding
from pe_lightning.population import Population
from pe_lightning.seeding import make_generator

variant, per_class, cands, rounds, k = sys.argv[1], *map(int, sys.argv[2:6])
dm = MNISTVariantDataModule(variant=variant); dm.setup()
size = dm.private_images.shape[1]
api = DrawText(image_size=size); api.setup(device="cpu", class_names=[str(c) for c in range(10)])
import os
emb = PixelEmbedding() if os.environ.get("PROJ_EMB") == "pixel" else HOGEmbedding()
keep = np.concatenate([np.flatnonzero(dm.private_labels == c)[:per_class] for c in range(10)])
target_img, labels = dm.private_images[keep], dm.private_labels[keep]
target = emb.embed(target_img)
best_img = np.empty_like(target_img); best_cond = None; best_d = torch.full((len(keep),), float("inf"))
t0 = time.time()
for c in range(10):
    idx = np.flatnonzero(labels == c)
    out = api.random(labels=np.full(cands, c), generator=make_generator(0, 0, "random", c))
    d = torch.cdist(target[idx], emb.embed(out.images))
    dmin, j = d.min(dim=1)
    j = j.numpy()
    best_img[idx] = out.images[j]; best_d[idx] = dmin
    cond_c = {key: np.asarray(v)[j] for key, v in out.conditions.items()}
    if best_cond is None:
        best_cond = {key: np.empty((len(keep), *np.asarray(v).shape[1:]), np.asarray(v).dtype) for key, v in out.conditions.items()}
    for key in best_cond:
        best_cond[key][idx] = cond_c[key]
print(f"random: mean distance {best_d.mean():.3f} ({time.time()-t0:.0f} s)", flush=True)
degrees = np.geomspace(0.3, 0.05, rounds)
for r, deg in enumerate(degrees):
    for v in range(k):
        out = api.variation(images=best_img, conditions=best_cond, labels=labels, degree=float(deg),
                            generator=make_generator(0, r * k + v + 1, "variation", 0))
        d = (emb.embed(out.images) - target).norm(dim=1)
        better = (d < best_d).numpy()
        best_img[better] = out.images[better]; best_d[better] = d[better]
        for key in best_cond:
            best_cond[key][better] = np.asarray(out.conditions[key])[better]
    print(f"round {r} degree {deg:.3f}: mean distance {best_d.mean():.3f} ({time.time()-t0:.0f} s)", flush=True)
pop = Population(images=best_img, labels=labels)
accs = [DownstreamEvaluation(max_epochs=30, val_fraction=0.0, seed=s).evaluate(pop, datamodule=dm)[0] for s in (0, 1, 2)]
print(f"{variant}: projection of {len(keep)} real images ({cands} candidates/class, {rounds} rounds x {k}): "
      f"{np.mean(accs)*100:.1f} ({', '.join(f'{a*100:.1f}' for a in accs)})", flush=True)
