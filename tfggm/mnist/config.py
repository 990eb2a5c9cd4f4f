"""The run configuration, checked whole when built, and the names of posteriors and likelihoods mapped to stencils."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import numbers
import os
import pathlib
import re
import reprlib
from collections.abc import Callable, Iterator

import tf_keras

from tfggm import stencils

__all__ = ["ConfigError", "VAEConfig", "StochasticLayer", "posterior_stencil", "likelihood_stencil",
           "learning_rate_at", "POSTERIORS", "LIKELIHOODS", "OBJECTIVES", "LEARNING_RATE_SCHEDULES", "MAX_LATENT_DIM",
           "MAX_STOCHASTIC_LAYERS", "MAX_SEED", "MIN_EXAMPLES", "OPTIONAL_KEYS"]

POSTERIORS = ("diagonal", "chain", "grid", "gershgorin_grid", "extended_grid", "band<k>", "full")
LIKELIHOODS = ("bernoulli", "logit_normal_diagonal", "logit_normal_grid", "logit_normal_extended_grid")
OBJECTIVES = ("elbo", "iwae")
LEARNING_RATE_SCHEDULES = ("constant", "iwae")
# A 32 x 32 grid: past MNIST's 784 pixels a code no longer compresses, and the bound keeps the check of a
# configuration fast (it builds the posterior's stencil; a full one at n = 1024 takes 30 ms).
MAX_LATENT_DIM = 1024
# Layer 1 and up to 7 upper layers: well past the IWAE paper's deepest model (two), a bound against runaway lists.
MAX_STOCHASTIC_LAYERS = 8
# The largest seed every consumer takes as given: the VAE's stateless posterior-noise seed is int32 (a larger
# seed would wrap round to a negative one), NumPy's generators and SeedSequence refuse negative seeds.
MAX_SEED = 2**31 - 1
# The fewest examples a run can use: training.RunData keeps a sixth of the training images (at least one) for
# validation, and the rest for training.
MIN_EXAMPLES = 6
# Fields added after config.json first appeared. A file without them was written before they existed; their
# defaults are how that run ran, so they may be missing from it. Any other missing key is an error.
OPTIONAL_KEYS = ("jit_compile", "steps_per_execution", "prior", "upper_layers", "learning_rate_schedule",
                 "output_bias_from_data", "zero_init_gaussians")
# Callables that tf_keras.activations.get also finds by name, which are no activations.
_NOT_ACTIVATIONS = ("deserialize", "get", "keras_export", "serialize")


class ConfigError(ValueError):
  """A configuration that cannot be built; the message, one line, says what to change.

  `field` is the `VAEConfig` field the error is about (so that a command line can name its flag), or None when
  the error is about no single field (an unreadable or corrupt config.json, a run directory, a strategy).
  """

  def __init__(self, message: str, field: str | None = None):
    super().__init__(message)
    self.field = field


def _show(value: object) -> str:
  """A short, one-line repr of a user's value: long strings and lists are cut, huge integers summarized."""
  if isinstance(value, int) and value.bit_length() > 64:  # repr() refuses ints of over 4,300 digits
    return f"an integer of {value.bit_length()} bits"
  return reprlib.repr(value)


def _is_integer(value: object) -> bool:
  """Whether `value` is an integer (numpy's included) but no bool: True is no latent dimension."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _square_side(n: int, name: str, role: str) -> int:
  side = math.isqrt(n)
  if side * side != n:
    raise ConfigError(f"{role} '{name}' lays the latents on a square grid; latent_dim = {n} is "
                      "not a square (use 16 for a 4 x 4 grid).", field="latent_dim")
  return side


def _band_stencil(name: str, latent_dim: int, role: str) -> stencils.Stencil | None:
  """The stencil of a posterior named band<k> (k >= 0, no leading zeros, k < latent_dim), else None."""
  match = re.fullmatch(r"band(0|[1-9][0-9]*)", name)
  if not match:
    return None
  digits = match.group(1)
  if len(digits) > len(str(latent_dim)) or int(digits) >= latent_dim:  # lengths first: int() takes <= 4,300 digits
    raise ConfigError(f"{role} {_show(name)} links each latent to the k before it, but "
                      f"latent_dim = {latent_dim} allows k <= {latent_dim - 1}; use band{latent_dim - 1} or full.",
                      field=role)
  return stencils.band(latent_dim, int(digits))


def _named_posterior(name: str, latent_dim: int, role: str) -> tuple[stencils.Stencil, str]:
  if name == "diagonal":
    return stencils.diagonal(latent_dim), "factor"
  if name == "chain":
    return stencils.chain(latent_dim), "factor"
  if name in ("grid", "gershgorin_grid", "extended_grid"):
    side = _square_side(latent_dim, name, role)
    if name == "extended_grid":
      return stencils.extended_grid(side, side), "factor"
    return stencils.grid(side, side), "precision" if name == "gershgorin_grid" else "factor"
  if name == "full":
    return stencils.band(latent_dim, latent_dim - 1), "factor"
  band = _band_stencil(name, latent_dim, role)
  if band is None:
    raise ConfigError(f"unknown {role} {_show(name)}; choose one of {', '.join(POSTERIORS)} "
                      "(band<k> as band4, band8, ...).", field=role)
  return band, "factor"


def posterior_stencil(name: str, latent_dim: int, role: str = "posterior") -> tuple[stencils.Stencil, str]:
  """(stencil, parameterization) of a posterior name; grids are sqrt(n) x sqrt(n), band<k> needs k < n.

  The names are those of Gaussian graphical models: a conditional prior p(z_l | z_{l+1}) takes them too, and
  `role` ("posterior" or "prior") names the distribution in the messages.

  Raises:
    ConfigError: an unknown name (field `role`), or a latent_dim the structure cannot lay out (a grid's n not a
      square, a stencil refusing the size: field "latent_dim"; band<k> with k >= n: field `role`).
  """
  try:
    return _named_posterior(name, latent_dim, role)
  except ConfigError:
    raise
  except ValueError as error:  # The stencil refuses the size.
    raise ConfigError(f"{role} '{name}' cannot be laid out on latent_dim = {latent_dim}: {error}",
                      field="latent_dim") from error


def _check_likelihood(name: str) -> None:
  if name not in LIKELIHOODS:
    raise ConfigError(f"unknown likelihood {_show(name)}; choose one of {', '.join(LIKELIHOODS)}.",
                      field="likelihood")


def likelihood_stencil(name: str, image_shape: tuple[int, int]) -> stencils.Stencil | None:
  """The pixel stencil of a logit-normal likelihood over images of (height, width); None for Bernoulli.

  Raises:
    ConfigError: an unknown name (field "likelihood").
  """
  _check_likelihood(name)
  height, width = image_shape
  return {
      "bernoulli": lambda: None,
      "logit_normal_diagonal": lambda: stencils.diagonal(height * width),
      "logit_normal_grid": lambda: stencils.grid(height, width),
      "logit_normal_extended_grid": lambda: stencils.extended_grid(height, width),
  }[name]()


def _is_activation(name: str) -> bool:
  """Whether tf_keras.activations.get(name) is an activation (it runs no TensorFlow op)."""
  if name in _NOT_ACTIVATIONS:
    return False
  try:
    tf_keras.activations.get(name)
  except (ValueError, TypeError):
    return False
  return True


def _as_float(value: numbers.Real) -> float:
  try:
    return float(value)
  except OverflowError:  # An int beyond float's range is as infinite as a float gets.
    return math.inf


_KINDS = {int: ("an integer", _is_integer, int),
          float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), _as_float),
          bool: ("a bool (true or false)", lambda v: isinstance(v, bool), bool),
          str: ("a string", lambda v: isinstance(v, str), str)}


def _checked(field: str, value: object, kind: type, ok: Callable[[object], bool], rule: str) -> object:
  """`value` as a `kind` (int, float, bool or str) for which `ok` holds, else ConfigError about `field`.

  Strict types: a bool is no number, a string no number, a float no int; an int is a float (1 -> 1.0), and
  floats must be finite. numpy scalars pass as the Python values they hold.
  """
  words, is_kind, convert = _KINDS[kind]
  if not is_kind(value):
    raise ConfigError(f"{field} must be {words}; got {_show(value)} ({type(value).__name__}).", field=field)
  value = convert(value)
  if kind is float and not math.isfinite(value):
    raise ConfigError(f"{field} must be finite; got {value}.", field=field)
  if not ok(value):
    raise ConfigError(f"{field} must be {rule}; got {_show(value)}.", field=field)
  return value


def _hidden_units(value: object) -> tuple[int, ...]:
  """`value` as a tuple of positive ints (JSON stores a list); an empty one means no hidden layers."""
  if not isinstance(value, (tuple, list)) or not all(_is_integer(units) and units >= 1 for units in value):
    raise ConfigError("hidden_units must be positive integers, the widths of the hidden layers (none: no hidden "
                      f"layer); got {_show(value)}.", field="hidden_units")
  return tuple(int(units) for units in value)


def _anything(_: object) -> bool:
  return True


# field -> (kind, the range as a test, the range in words). posterior, prior, likelihood and hidden_units are
# checked further by `posterior_stencil`, `_check_prior`, `_check_likelihood` and `_hidden_units`; upper_layers,
# no scalar, by `_upper_layers`.
_RULES = {
    "posterior": (str, _anything, ""),
    "prior": (str, _anything, ""),
    "likelihood": (str, _anything, ""),
    "latent_dim": (int, lambda n: 1 <= n <= MAX_LATENT_DIM, f"in [1, {MAX_LATENT_DIM}]"),
    "activation": (str, _is_activation, "a Keras activation name such as 'elu', 'relu' or 'tanh'"),
    "objective": (str, lambda name: name in OBJECTIVES, "'elbo' or 'iwae'"),
    "num_samples": (int, lambda n: n >= 1, ">= 1"),
    "analytic_kl": (bool, _anything, ""),
    "warmup_epochs": (int, lambda n: n >= 0, ">= 0"),
    "learning_rate": (float, lambda x: x > 0, "> 0"),
    "learning_rate_schedule": (str, lambda name: name in LEARNING_RATE_SCHEDULES, "'constant' or 'iwae'"),
    "clip_global_norm": (float, lambda x: x > 0, "> 0 (or None: no clipping)"),
    "batch_size": (int, lambda n: n >= 1, ">= 1"),
    "epochs": (int, lambda n: n >= 1, ">= 1"),
    "alpha": (float, lambda x: 0 <= x < 0.5, "in [0, 0.5)"),
    "diagonal_floor": (float, lambda x: x > 0, "> 0"),
    "seed": (int, lambda n: 0 <= n <= MAX_SEED, f"in [0, 2**31 - 1 = {MAX_SEED}]"),
    "max_examples": (int, lambda n: n >= MIN_EXAMPLES, f">= {MIN_EXAMPLES} (training holds out a sixth of the "
                     "training images, at least one, for validation) or None (all)"),
    "jit_compile": (bool, _anything, ""),
    "steps_per_execution": (int, lambda n: n >= 1, ">= 1"),
    "output_bias_from_data": (bool, _anything, ""),
    "zero_init_gaussians": (bool, _anything, ""),
}
_NONE_ALLOWED = ("clip_global_norm", "max_examples")


@dataclasses.dataclass(frozen=True)
class StochasticLayer:
  """A stochastic layer of a hierarchical VAE: its latents z_l, the networks below it, its posterior and prior.

  `hidden_units` are the hidden widths of both networks between the layer below and this one, q(z_l | z_{l-1})
  and p(z_{l-1} | z_l) (none: one Dense layer each). `posterior` is the structure of q(z_l | z_{l-1}), a name of
  `POSTERIORS`. `prior` is "standard", N(0, I), for the top layer, else the structure of the conditional prior
  p(z_l | z_{l+1}). The fields are checked when a `VAEConfig` holding the layer is built: whether a prior fits
  depends on the layers above.
  """

  latent_dim: int
  hidden_units: tuple[int, ...]
  posterior: str = "diagonal"
  prior: str = "standard"


_LAYER_KEYS = tuple(field.name for field in dataclasses.fields(StochasticLayer))
_LAYER_KEYS_IN_WORDS = f"{', '.join(_LAYER_KEYS[:-1])} and {_LAYER_KEYS[-1]}"


@contextlib.contextmanager
def _in_layer(number: int, field: str) -> Iterator[None]:
  """Re-raises a ConfigError from within as one about `field`, its message starting "layer <number>: "."""
  try:
    yield
  except ConfigError as error:
    raise ConfigError(f"layer {number}: {error}", field=field) from error


def _check_prior(prior: str, number: int, latent_dim: int, top: bool) -> None:
  """The prior of layer `number`, on `latent_dim` latents: "standard" at the top, else the structure of the
  conditional p(z_l | z_{l+1})."""
  if top:
    if prior != "standard":
      raise ConfigError(f"the top layer's prior is N(0, I): use 'standard'; got {_show(prior)}.")
  elif prior == "standard":
    raise ConfigError(f"layer {number + 1} lies above, so the prior is the conditional p(z{number} | z{number + 1}): "
                      "choose a structure such as diagonal or band4 ('standard', N(0, I), is the top layer's).")
  else:
    posterior_stencil(prior, latent_dim, role="prior")


def _check_layer_keys(layer: dict, required: tuple[str, ...]) -> None:
  unknown = sorted(str(key) for key in set(layer) - set(_LAYER_KEYS))
  if unknown:
    raise ConfigError(f"unknown keys {_show(unknown)}; a layer has the keys {_LAYER_KEYS_IN_WORDS}.")
  missing = sorted(set(required) - set(layer))
  if missing:
    raise ConfigError(f"the layer lacks the keys {missing}.")


def _upper_layer(value: object, number: int, top: bool) -> StochasticLayer:
  """`value` (a StochasticLayer or a dict of its fields) as layer `number`, its fields checked like the top-level
  ones and normalized; ConfigError about upper_layers, "layer <number>: ...", on the first problem."""
  with _in_layer(number, "upper_layers"):
    if isinstance(value, dict):
      _check_layer_keys(value, required=("latent_dim", "hidden_units"))
      value = StochasticLayer(**value)
    if not isinstance(value, StochasticLayer):
      raise ConfigError(f"a layer must be an object with the keys {_LAYER_KEYS_IN_WORDS}; got {_show(value)} "
                        f"({type(value).__name__}).")
    latent_dim = _checked("latent_dim", value.latent_dim, *_RULES["latent_dim"])
    hidden_units = _hidden_units(value.hidden_units)
    posterior, prior = (_checked(field, getattr(value, field), *_RULES[field]) for field in ("posterior", "prior"))
    layer = StochasticLayer(latent_dim, hidden_units, posterior, prior)
    posterior_stencil(layer.posterior, layer.latent_dim)
    _check_prior(layer.prior, number, layer.latent_dim, top)
  return layer


def _upper_layers(value: object) -> tuple[StochasticLayer, ...]:
  """`value`, a list of layers 2, 3, ... bottom to top (StochasticLayers or dicts of their fields), checked and
  normalized; ConfigError about upper_layers on the first problem."""
  if not isinstance(value, (tuple, list)):
    raise ConfigError(f"upper_layers must be a list of the layers above layer 1, bottom to top, each an object with "
                      f"the keys {_LAYER_KEYS_IN_WORDS}; got {_show(value)} ({type(value).__name__}).",
                      field="upper_layers")
  if len(value) >= MAX_STOCHASTIC_LAYERS:
    raise ConfigError(f"upper_layers holds {len(value)} layers, but a model has at most {MAX_STOCHASTIC_LAYERS} "
                      f"stochastic layers: layer 1 and {MAX_STOCHASTIC_LAYERS - 1} upper ones.", field="upper_layers")
  return tuple(_upper_layer(layer, number, top=number == len(value) + 1) for number, layer in enumerate(value, start=2))


def _json_object(text: str) -> dict:
  """The JSON object that `text` holds, else ConfigError: empty, not JSON, a duplicate key, not an object."""
  if not text.strip():
    raise ConfigError("the configuration is empty.")
  try:
    values = json.loads(text, object_pairs_hook=_without_duplicates)
  except ConfigError:
    raise
  except RecursionError as error:
    raise ConfigError("the configuration is no object of settings: its JSON is nested too deeply.") from error
  except ValueError as error:  # json.JSONDecodeError, or an integer of over 4,300 digits
    raise ConfigError(f"the configuration is not valid JSON ({error}).") from error
  if not isinstance(values, dict):
    raise ConfigError(f"the configuration must be a JSON object of settings; got a {type(values).__name__}.")
  return values


def _without_duplicates(pairs: list[tuple[str, object]]) -> dict:
  duplicates = sorted(key for key, count in collections.Counter(key for key, _ in pairs).items() if count > 1)
  if duplicates:
    raise ConfigError(f"the configuration sets {_show(duplicates)} more than once.")
  return dict(pairs)


def _read_text(path: pathlib.Path) -> str:
  try:
    return path.read_bytes().decode("utf-8-sig")  # a BOM, as some editors write, is no error
  except OSError as error:
    raise ConfigError(f"cannot read the configuration ({error.strerror or error}).") from error
  except UnicodeDecodeError as error:
    raise ConfigError(f"the configuration is not UTF-8 text ({error.reason} at byte {error.start}); "
                      "the file is corrupt.") from error


# Fields of `VAEConfig` that a resumed run may change (see `VAEConfig.same_run_as`).
EXECUTION_SETTINGS = ("steps_per_execution",)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Everything that defines a training run; saved as `config.json` in the run directory.

  Defaults follow the authors' public MNIST configuration: 784-200-200-16 ELU
  encoder and decoder, Adam 1e-3, batch 32, gradient clipping at global norm
  100, a short KL warm-up.

  A hierarchical VAE stacks `upper_layers` (layers 2, 3, ..., see `StochasticLayer`) on layer 1, whose fields are
  latent_dim, hidden_units, posterior and prior; `stochastic_layers` lists them all. The default is one layer.

  A configuration is valid once built: the constructor checks every field's type and range and the
  posterior's fit to `latent_dim` (ConfigError naming the field), so nothing invalid reaches a run directory.
  """

  posterior: str = "diagonal"
  prior: str = "standard"            # of z1: N(0, I) if layer 1 is the top, else the structure of p(z1 | z2)
  likelihood: str = "bernoulli"
  output_bias_from_data: bool = False  # the decoder's output bias starts at the logit of the training pixel means
  zero_init_gaussians: bool = False  # every posterior's and conditional prior's parameter layer starts with zero
                                     # weights: each Gaussian starts isotropic, L = (softplus(0) + floor) I
  latent_dim: int = 16
  hidden_units: tuple[int, ...] = (200, 200)
  activation: str = "elu"
  upper_layers: tuple[StochasticLayer, ...] = ()  # layers 2, 3, ..., bottom to top
  objective: str = "elbo"            # "elbo" or "iwae"
  num_samples: int = 1               # z samples per data point (k of IWAE)
  analytic_kl: bool = True           # exact KL; False: Monte Carlo log q - log p
  warmup_epochs: int = 5             # beta goes 0 -> 1 linearly over these epochs (0: off)
  learning_rate: float = 1e-3
  learning_rate_schedule: str = "constant"  # or "iwae": see `learning_rate_at`
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
    """Checks every field, its type and range, the posterior's fit to latent_dim, each upper layer's fields and
    every prior's fit to its place; ConfigError (with the field) on the first problem. Normalizes: hidden_units to
    a tuple, ints in float fields to floats, upper_layers to a tuple of StochasticLayers."""
    for field, (kind, ok, rule) in _RULES.items():
      value = getattr(self, field)
      if value is not None or field not in _NONE_ALLOWED:
        object.__setattr__(self, field, _checked(field, value, kind, ok, rule))
    object.__setattr__(self, "hidden_units", _hidden_units(self.hidden_units))
    _check_likelihood(self.likelihood)
    posterior_stencil(self.posterior, self.latent_dim)
    object.__setattr__(self, "upper_layers", _upper_layers(self.upper_layers))
    with _in_layer(1, "prior"):
      _check_prior(self.prior, 1, self.latent_dim, top=not self.upper_layers)
    if self.output_bias_from_data and self.continuous:
      raise ConfigError(f"output_bias_from_data starts the Bernoulli decoder's logits at the training pixel means; "
                        f"the likelihood '{self.likelihood}' has no such bias: use bernoulli, or false.",
                        field="output_bias_from_data")

  def same_run_as(self, other: VAEConfig) -> bool:
    """Whether `other` trains the same model with the same updates, i.e. may resume this run.

    Only the execution settings in `EXECUTION_SETTINGS` may differ: they change how
    often Keras returns to Python, not what it computes.
    """
    return dataclasses.replace(other, **{k: getattr(self, k) for k in EXECUTION_SETTINGS}) == self

  @property
  def stochastic_layers(self) -> tuple[StochasticLayer, ...]:
    """All stochastic layers, bottom to top: layer 1 (of latent_dim, hidden_units, posterior and prior), then
    `upper_layers`."""
    return (StochasticLayer(self.latent_dim, self.hidden_units, self.posterior, self.prior), *self.upper_layers)

  @property
  def continuous(self) -> bool:
    """Whether the data are dequantized (logit-normal) rather than binarized (Bernoulli)."""
    return self.likelihood != "bernoulli"

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> VAEConfig:
    """The configuration in `text` (as `to_json` writes it), else ConfigError with a one-line message.

    Errors: empty text, not JSON, not an object, a key set twice, an unknown key, a missing key, a bad value
    (then `field` names it). Only the keys of `OPTIONAL_KEYS` may be missing: they take their defaults. A layer
    of upper_layers has all the keys of `StochasticLayer`, and no other.
    """
    values = _json_object(text)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ConfigError(f"unknown configuration keys {_show(unknown)}.")
    missing = sorted(fields - set(values) - set(OPTIONAL_KEYS))
    if missing:
      raise ConfigError(f"the configuration lacks the keys {missing}; it is incomplete.")
    layers = values.get("upper_layers")
    for number, layer in enumerate(layers if isinstance(layers, list) else [], start=2):
      if isinstance(layer, dict):
        with _in_layer(number, "upper_layers"):
          _check_layer_keys(layer, required=_LAYER_KEYS)
    return cls(**values)

  @classmethod
  def load(cls, path: str | os.PathLike) -> VAEConfig:
    """The configuration saved at `path`; ConfigError whose message starts with the path when the file cannot
    be read (missing, permission denied), is no UTF-8 text, or is no configuration (see `from_json`)."""
    path = pathlib.Path(path)
    try:
      return cls.from_json(_read_text(path))
    except ConfigError as error:
      raise ConfigError(f"{path}: {error}", field=error.field) from error


def learning_rate_at(config: VAEConfig, epoch: int) -> float:
  """The learning rate of epoch `epoch` (0, 1, ..., config.epochs - 1) under `config.learning_rate_schedule`.

  "constant": `config.learning_rate` throughout. "iwae": the schedule of Burda et al. (2016), in which stage
  i = 0, ..., 7 runs 3**i of 3,280 epochs at learning_rate * 10**(-i/7), compressed into `config.epochs`:
  stage i ends before epoch

      end_i = max(1, round(epochs * (3**0 + 3**1 + ... + 3**i) / 3280))    (rounded half up)

  and an epoch e is in the first stage with e < end_i. end_7 = epochs, so every epoch is in a stage and the last
  stage reaches the end; end_i >= 1 puts the first epoch in stage 0, at learning_rate. With epochs = 3280 the
  stages are the paper's, 1, 3, 9, ..., 2187 epochs; a shorter run skips the stages that round to no epoch
  (but never stage 0, nor, past one epoch, stage 7).

  Raises:
    ValueError: an epoch outside [0, config.epochs).
  """
  if not 0 <= epoch < config.epochs:
    raise ValueError(f"epoch must be in [0, {config.epochs}) (the run's epochs, counted from 0); got {epoch}.")
  if config.learning_rate_schedule == "constant":
    return config.learning_rate
  stages = 8
  total = (3**stages - 1) // 2  # 3**0 + ... + 3**7 = 3280
  ends = (max(1, (config.epochs * (3**(i + 1) - 1) // 2 + total // 2) // total) for i in range(stages))
  stage = next(i for i, end in enumerate(ends) if epoch < end)
  return config.learning_rate * 10 ** (-stage / 7)
