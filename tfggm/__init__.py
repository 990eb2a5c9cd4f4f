"""tfggm: Gaussian graphical models (banded-precision Gaussians) for TensorFlow Probability."""

from tfggm import linalg, parameterizations, stencils
from tfggm.bijector import PrecisionFactorSolve
from tfggm.distributions import (GaussianGraphicalModel, MultivariateLogitNormal,
                                 hutchinson_trace, kl_between_ggms, kl_to_diagonal_normal, squash)

__version__ = "0.1.0"

__all__ = [
    "GaussianGraphicalModel",
    "MultivariateLogitNormal",
    "PrecisionFactorSolve",
    "hutchinson_trace",
    "kl_between_ggms",
    "kl_to_diagonal_normal",
    "linalg",
    "parameterizations",
    "squash",
    "stencils",
]
