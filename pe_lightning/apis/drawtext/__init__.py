"""DrawText: a weight-free simulator "foundation model" that renders text with TrueType fonts.

Each sample is one string (a class name such as ``"7"``) drawn in one font, described by a
small set of parameters (the *API conditions*): font, text, stroke thickness, size, aspect
ratio, rotation, shear (slant), translation, blur and intensity. The RANDOM API draws the
parameters uniformly from their ranges; the VARIATION API perturbs the *parameters* of
existing samples (not their pixels) and renders them again.

Rendering is batched and fast (~93,000 RANDOM / ~67,000 VARIATION 28x28 images per second
on 2 CPU cores, benchmarks/api_throughput.py; ~50x
the one-image-at-a-time PIL rendering of the reference implementation):

1. Once per fit, every ``(font, text)`` glyph is rendered with PIL at a high resolution,
   reduced to a distance field (to its skeleton for ``stroke_mode="pen"``, to its outline
   for ``"outline"``), thresholded at a few stroke levels, box-downsampled into tiles
   centred on the glyph's centre of mass and pre-blurred at
   a few blur levels. The tiles form one stacked atlas ``(fonts*texts*strokes*blurs, T, T)``.
2. A batch is rendered by gathering each sample's tile (font, text, nearest stroke level,
   nearest blur level) and one bilinear ``grid_sample`` with per-sample affine maps
   (scale, aspect, shear, rotation, translation) plus the elastic warp (a bicubic
   upsampling of a ``G x G`` control grid). Both are linear in small per-sample
   coefficients, so the whole sampling grid is one matmul with a basis built once.
3. A tone curve (``tone_range``), the intensity and uint8 quantisation finish the images.

All randomness comes from the ``torch.Generator`` passed to each call.

The package's modules, one job each:

* :mod:`.fonts`: font discovery (the ``fonts`` argument to a list of font files);
* :mod:`.atlas`: the glyph atlas (step 1);
* :mod:`.parameters`: the parameter model: the conditions, :data:`PRIORS`
  (``public`` / ``mnist_fitted``), :class:`FittedPriorWarning`, what RANDOM draws and
  VARIATION perturbs;
* :mod:`.renderer`: conditions to images (steps 2 and 3);
* :mod:`.api`: the :class:`DrawText` ImageAPI that joins them.
"""

from pe_lightning.apis.drawtext.api import DrawText
from pe_lightning.apis.drawtext.parameters import PRIORS, FittedPriorWarning

__all__ = ["DrawText", "FittedPriorWarning", "PRIORS"]
