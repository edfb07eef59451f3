"""Experiment only (seventh round): selection 'systematic_sqrt' = systematic on sqrt(weights)."""
import torch
from pe_lightning.engine import selection as S

@S.register_selection("systematic_sqrt")
def _systematic_sqrt(weights, n, *, generator, class_name):
    return S._systematic(torch.sqrt(weights), n, generator=generator, class_name=class_name)
