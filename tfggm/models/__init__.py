"""Models over any encoder and decoder that output distributions: the VAE, its bounds, log p(x) estimates."""

from tfggm.models.evaluation import elbo_per_example, importance_sampled_log_likelihood, summarize
from tfggm.models.vae import VAE

__all__ = ["VAE", "elbo_per_example", "importance_sampled_log_likelihood", "summarize"]
