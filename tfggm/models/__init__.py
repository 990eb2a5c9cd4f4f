"""Models over any encoder and decoder that output distributions: the VAE, the hierarchical VAE, their bounds,
log p(x) estimates."""

from tfggm.models.evaluation import (
                                     bound_per_example,
                                     elbo_per_example,
                                     importance_sampled_log_likelihood,
                                     log_likelihood_from_weights,
                                     summarize,
)
from tfggm.models.hierarchical import HierarchicalVAE
from tfggm.models.vae import VAE

__all__ = ["VAE", "HierarchicalVAE", "elbo_per_example", "importance_sampled_log_likelihood",
           "log_likelihood_from_weights", "bound_per_example", "summarize"]
