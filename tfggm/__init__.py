"""tfggm: Gaussian graphical models (banded-precision Gaussians) for TensorFlow Probability and Keras.

The library, bottom to top: `stencils` (which entries of the factor L are free) -> `linalg` (banded kernels)
-> `PrecisionFactorSolve` (the bijector) -> the distributions (`tfggm.distributions`) -> the Keras layers
(`tfggm.layers`) -> the models (`tfggm.models`). The MNIST application (`tfggm.mnist`, the `tfggm` command)
sits on top and is not imported here.
"""

from tfggm import linalg, stencils
from tfggm.bijector import PrecisionFactorSolve
from tfggm.distributions import GaussianGraphicalModel, MultivariateLogitNormal
from tfggm.layers import GaussianGraphicalModelLayer, IndependentBernoulliLayer, MultivariateLogitNormalLayer
from tfggm.models import VAE, HierarchicalVAE

__version__ = "0.1.0"

__all__ = [
    "GaussianGraphicalModel",
    "GaussianGraphicalModelLayer",
    "HierarchicalVAE",
    "IndependentBernoulliLayer",
    "MultivariateLogitNormal",
    "MultivariateLogitNormalLayer",
    "PrecisionFactorSolve",
    "VAE",
    "linalg",
    "stencils",
]
