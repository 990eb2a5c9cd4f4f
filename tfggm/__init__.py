"""tfggm: Gaussian graphical models (banded-precision Gaussians) for TensorFlow Probability."""

from tfggm import data, layers, linalg, parameterizations, stencils
from tfggm.bijector import PrecisionFactorSolve
from tfggm.config import VAEConfig
from tfggm.distributions import (GaussianGraphicalModel, MultivariateLogitNormal,
                                 hutchinson_trace, kl_between_ggms, kl_to_diagonal_normal, squash)
from tfggm.vae import VAE, build_decoder, build_encoder, build_vae

__version__ = "0.1.0"

__all__ = [
    "GaussianGraphicalModel",
    "MultivariateLogitNormal",
    "PrecisionFactorSolve",
    "VAE",
    "VAEConfig",
    "build_decoder",
    "build_encoder",
    "build_vae",
    "data",
    "hutchinson_trace",
    "kl_between_ggms",
    "kl_to_diagonal_normal",
    "layers",
    "linalg",
    "parameterizations",
    "squash",
    "stencils",
]
