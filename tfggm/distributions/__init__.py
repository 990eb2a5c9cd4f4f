"""Distributions over latents and pixels built on banded precision factors."""

from tfggm.distributions.ggm import GaussianGraphicalModel
from tfggm.distributions.kl import hutchinson_trace, kl_between_ggms, kl_to_diagonal_normal
from tfggm.distributions.logit_normal import MultivariateLogitNormal, squash

__all__ = [
    "GaussianGraphicalModel",
    "MultivariateLogitNormal",
    "hutchinson_trace",
    "kl_between_ggms",
    "kl_to_diagonal_normal",
    "squash",
]
