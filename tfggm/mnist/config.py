"""The run configuration, and the names of posteriors and likelihoods mapped to stencils."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re

from tfggm import stencils

__all__ = ["ConfigError", "VAEConfig", "posterior_stencil", "likelihood_stencil", "POSTERIORS",
           "LIKELIHOODS"]

POSTERIORS = ("diagonal", "chain", "grid", "gershgorin_grid", "extended_grid", "band<k>", "full")
LIKELIHOODS = ("bernoulli", "logit_normal_diagonal", "logit_normal_grid", "logit_normal_extended_grid")


class ConfigError(ValueError):
  """A configuration that cannot be built; the message says what to change."""


def _square_side(n: int, name: str) -> int:
  side = math.isqrt(n)
  if side * side != n:
    raise ConfigError(f"posterior '{name}' lays the latents on a square grid; latent_dim = {n} is "
                      "not a square (use 16 for a 4 x 4 grid).")
  return side


def posterior_stencil(name: str, latent_dim: int) -> tuple[stencils.Stencil, str]:
  """(stencil, parameterization) of a posterior name; grids are sqrt(n) x sqrt(n)."""
  if name == "diagonal":
    return stencils.diagonal(latent_dim), "factor"
  if name == "chain":
    return stencils.chain(latent_dim), "factor"
  if name in ("grid", "gershgorin_grid", "extended_grid"):
    side = _square_side(latent_dim, name)
    if name == "extended_grid":
      return stencils.extended_grid(side, side), "factor"
    return stencils.grid(side, side), "precision" if name == "gershgorin_grid" else "factor"
  if name == "full":
    return stencils.band(latent_dim, latent_dim - 1), "factor"
  match = re.fullmatch(r"band(\d+)", name)
  if match:
    return stencils.band(latent_dim, int(match.group(1))), "factor"
  raise ConfigError(f"unknown posterior '{name}'; choose one of {', '.join(POSTERIORS)} "
                    "(band<k> as band4, band8, ...).")


def likelihood_stencil(name: str, image_shape: tuple[int, int]) -> stencils.Stencil | None:
  """The pixel stencil of a logit-normal likelihood over images of (height, width); None for Bernoulli."""
  height, width = image_shape
  choices = {
      "bernoulli": lambda: None,
      "logit_normal_diagonal": lambda: stencils.diagonal(height * width),
      "logit_normal_grid": lambda: stencils.grid(height, width),
      "logit_normal_extended_grid": lambda: stencils.extended_grid(height, width),
  }
  if name not in choices:
    raise ConfigError(f"unknown likelihood '{name}'; choose one of {', '.join(LIKELIHOODS)}.")
  return choices[name]()


# Fields of `VAEConfig` that a resumed run may change (see `VAEConfig.same_run_as`).
EXECUTION_SETTINGS = ("steps_per_execution",)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Everything that defines a training run; saved as `config.json` in the run directory.

  Defaults follow the authors' public MNIST configuration: 784-200-200-16 ELU
  encoder and decoder, Adam 1e-3, batch 32, gradient clipping at global norm
  100, a short KL warm-up.
  """

  posterior: str = "diagonal"
  likelihood: str = "bernoulli"
  latent_dim: int = 16
  hidden_units: tuple[int, ...] = (200, 200)
  activation: str = "elu"
  objective: str = "elbo"            # "elbo" or "iwae"
  num_samples: int = 1               # z samples per data point (k of IWAE)
  analytic_kl: bool = True           # exact KL; False: Monte Carlo log q - log p
  warmup_epochs: int = 5             # beta goes 0 -> 1 linearly over these epochs (0: off)
  learning_rate: float = 1e-3
  clip_global_norm: float | None = 100.0
  batch_size: int = 32
  epochs: int = 500
  alpha: float = 0.01                # squashing of pixels for logit-normal likelihoods
  diagonal_floor: float = 1e-3
  seed: int = 0
  max_examples: int | None = None    # truncate every split (quick runs, tests)
  jit_compile: bool = False          # XLA-compile the whole step (in-graph pixel checks are then skipped)
  steps_per_execution: int = 1       # training steps per call of the step function: the same updates, fewer
                                     # per-batch callback calls (Keras runs batch hooks once per call); an
                                     # execution setting, so a run may resume with another value

  def __post_init__(self):
    checks = [
        (self.objective in ("elbo", "iwae"), f"objective must be 'elbo' or 'iwae'; got {self.objective!r}"),
        (self.latent_dim >= 1, f"latent_dim must be >= 1; got {self.latent_dim}"),
        (self.num_samples >= 1, f"num_samples must be >= 1; got {self.num_samples}"),
        (self.batch_size >= 1, f"batch_size must be >= 1; got {self.batch_size}"),
        (self.steps_per_execution >= 1, f"steps_per_execution must be >= 1; got {self.steps_per_execution}"),
        (self.epochs >= 1, f"epochs must be >= 1; got {self.epochs}"),
        (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0; got {self.warmup_epochs}"),
        (self.learning_rate > 0, f"learning_rate must be > 0; got {self.learning_rate}"),
        (self.clip_global_norm is None or self.clip_global_norm > 0,
         f"clip_global_norm must be > 0 (or None: no clipping); got {self.clip_global_norm}"),
        (0 <= self.alpha < 0.5, f"alpha must be in [0, 0.5); got {self.alpha}"),
        (all(u >= 1 for u in self.hidden_units), f"hidden_units must be positive; got {self.hidden_units}"),
    ]
    for ok, message in checks:
      if not ok:
        raise ConfigError(message + ".")
    posterior_stencil(self.posterior, self.latent_dim)
    if self.likelihood not in LIKELIHOODS:
      raise ConfigError(f"unknown likelihood '{self.likelihood}'; choose one of {', '.join(LIKELIHOODS)}.")
    object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))

  def same_run_as(self, other: VAEConfig) -> bool:
    """Whether `other` trains the same model with the same updates, i.e. may resume this run.

    Only the execution settings in `EXECUTION_SETTINGS` may differ: they change how
    often Keras returns to Python, not what it computes.
    """
    return dataclasses.replace(other, **{k: getattr(self, k) for k in EXECUTION_SETTINGS}) == self

  @property
  def continuous(self) -> bool:
    """Whether the data are dequantized (logit-normal) rather than binarized (Bernoulli)."""
    return self.likelihood != "bernoulli"

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> VAEConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    values = json.loads(text)
    unknown = set(values) - fields
    if unknown:
      raise ConfigError(f"unknown configuration keys {sorted(unknown)}.")
    return cls(**values)

  def save(self, path: pathlib.Path) -> None:
    path.write_text(self.to_json() + "\n")

  @classmethod
  def load(cls, path: pathlib.Path) -> VAEConfig:
    return cls.from_json(path.read_text())
