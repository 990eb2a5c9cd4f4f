"""Trained run directories: load the model, evaluate it on the fixed test set."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import tensorflow as tf

from tfggm.mnist import data
from tfggm.mnist.config import VAEConfig
from tfggm.mnist.networks import build_vae
from tfggm.mnist.rundir import WEIGHTS, RunDirectory, RunDirectoryError
from tfggm.mnist.training import RunData
from tfggm.models import HierarchicalVAE, evaluation

__all__ = ["load_run", "evaluate_run", "active_units"]


def load_run(run_dir: str | pathlib.Path, weights: str = WEIGHTS[0]) -> tuple[VAEConfig, HierarchicalVAE]:
  """The configuration and the trained model (its `weights`, one of `WEIGHTS`) of a run directory."""
  run = RunDirectory(run_dir)
  config = run.load_config()
  weights_path = run.weights(weights)
  model = build_vae(config, data.IMAGE_SHAPE)
  model(tf.zeros([1, *model.encoders[0].inputs[0].shape[1:]]))
  model.optimizer.build(model.trainable_variables)
  try:
    model.load_weights(str(weights_path))
  except (ValueError, OSError, KeyError) as error:  # another model's weights, or not a weights file
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise RunDirectoryError(f"{weights_path} does not hold weights of the model in {run.config} "
                            f"({first_line}); was it copied from another run?") from None
  return config, model


def active_units(model: HierarchicalVAE, images: np.ndarray, threshold: float = 0.01, batch_size: int = 500,
                 num_samples: int = 100, seed: int = 0) -> list[int]:
  """Per stochastic layer, the units u with Var_x(E_q[z_u | x]) > threshold (Burda et al., 2016).

  ```none
  E_q[z_1 | x] = mean of q(z_1|x)                                              exact
  E_q[z_l | x] ~= 1/S sum_s mean of q(z_l | z_{l-1}^(s)),  z^(s) ~ q(z|x)    l >= 2, S = num_samples
  ```

  Cost: S passes of the upper encoders per image (one pass of the first).
  """
  per_layer = [[] for _ in model.latent_dims]
  for start in range(0, len(images), batch_size):
    x = tf.constant(images[start:start + batch_size])
    per_layer[0].append(model.encoders[0](x).mean().numpy())
    layers = model.posteriors_and_samples(x, num_samples, seed=tf.constant([seed, start], tf.int32)) \
        if model.num_layers > 1 else []
    for layer, (posterior, _) in enumerate(layers[1:], start=1):
      means = tf.reshape(posterior.mean(), [num_samples, -1, model.latent_dims[layer]])
      per_layer[layer].append(tf.reduce_mean(means, axis=0).numpy())
  return [int(np.sum(np.var(np.concatenate(means), axis=0) > threshold)) for means in per_layer]


def evaluate_run(run_dir: str | pathlib.Path, num_samples: int = 5000, chunk_size: int = 500,
                 max_test: int | None = None, data_dir: str | None = None,
                 weights: str = WEIGHTS[0], seed: int = 0, allow_nonstandard_counts: bool = False) -> dict:
  """Test ELBO and importance-sampled log p(x) (K = num_samples) of a run, on the fixed test set.

  Writes `evaluation.json` (the report) and `evaluation_per_example.npz` (the
  per-image ELBO and log p(x), so rows can be compared pairwise on the same
  images) into the run directory, owning it meanwhile (a training process in it
  makes this raise DirectoryBusy). `RunDirectory.evaluation_results` reads the
  two, checked to be one evaluation; a failure such as a full disk keeps the
  previous ones. For logit-normal runs the densities (nats) are of the
  dequantized data in [0, 1]^784; `bits_per_dim` gives them as bits/dim of the
  8-bit data, -log2 p(x) / 784 + 8 (`data.discrete_bits_per_dim`: positive,
  lower is better).
  """
  run = RunDirectory(run_dir)
  config, model = load_run(run.path, weights)
  test = RunData(config, data_dir, allow_nonstandard_counts).test[:max_test]
  with run.owned():
    report, per_example = _evaluation_report(run, config, model, test, weights, num_samples, chunk_size, seed)
    run.write_evaluation(report, per_example)
  return report


def _evaluation_report(run: RunDirectory, config: VAEConfig, model: HierarchicalVAE, test: np.ndarray,
                       weights: str, num_samples: int, chunk_size: int,
                       seed: int) -> tuple[dict, dict[str, np.ndarray]]:
  """(the report of `evaluate_run`, the per-image ELBO and log p(x)).

  The proposal of the importance-sampled log p(x) is q of every layer (`HierarchicalVAE.log_importance_weights`);
  the ELBO is one sample per image, with the exact entropies and top KL of `HierarchicalVAE.elbo` whatever the
  training used.
  """
  elbo = evaluation.bound_per_example(lambda x, batch_seed: model.elbo(x, 1, batch_seed, analytic_kl=True), test,
                                      seed=seed)
  log_px = evaluation.log_likelihood_from_weights(model.log_importance_weights, test, num_samples=num_samples,
                                                  chunk_size=chunk_size, seed=seed)
  units = active_units(model, test)
  report = dict(run_dir=str(run.path), weights=weights, posterior=config.posterior, likelihood=config.likelihood,
                num_importance_samples=num_samples, test_elbo=evaluation.summarize(elbo),
                test_log_likelihood=evaluation.summarize(log_px),
                active_units=units[0], latent_dim=config.latent_dim)
  if len(units) > 1:
    report.update(active_units_per_layer=units, latent_dims=[layer.latent_dim for layer in config.stochastic_layers])
  if config.continuous:
    report["bits_per_dim"] = dict(
        convention="bits/dim of the 8-bit data: -log2 p(x) / D + 8",
        elbo=float(data.discrete_bits_per_dim(report["test_elbo"]["mean"])),
        log_likelihood=float(data.discrete_bits_per_dim(report["test_log_likelihood"]["mean"])),
        log_likelihood_stderr=report["test_log_likelihood"]["stderr"] / (data.NUM_PIXELS * math.log(2)))
  return report, dict(elbo=elbo, log_likelihood=log_px)
