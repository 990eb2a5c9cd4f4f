"""The run configuration: every field checked when built, ConfigError naming the field, corrupt config.json files,
the learning-rate schedules, and the `tfggm train` flags that make a configuration."""

import dataclasses
import json
import math
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from tfggm import stencils
from tfggm.mnist import cli
from tfggm.mnist import config as config_module
from tfggm.mnist.config import (
  MAX_LATENT_DIM,
  MAX_SEED,
  MAX_STOCHASTIC_LAYERS,
  MIN_EXAMPLES,
  OPTIONAL_KEYS,
  ConfigError,
  StochasticLayer,
  VAEConfig,
  learning_rate_at,
)
from tfggm.mnist.data import DataError

FIELDS = [field.name for field in dataclasses.fields(VAEConfig)]
# An upper layer that may be the top (its prior is N(0, I)), and one that may lie below another.
TOP = dict(latent_dim=8, hidden_units=(16,), posterior="band2")
BELOW = {**TOP, "prior": "chain"}


def _stacked(*layers, **changes) -> dict:
  """The changes of a configuration whose upper layers are `layers` (layer 1's prior diagonal unless changed)."""
  return {"prior": "diagonal", "upper_layers": list(layers), **changes}


def test_config_error_names_its_field():
  error = ConfigError("latent_dim must be >= 1; got 0.", field="latent_dim")
  assert isinstance(error, ValueError) and str(error) == "latent_dim must be >= 1; got 0."
  assert error.field == "latent_dim" and ConfigError("not a run directory").field is None


# One registry of bad configurations: (changes, the field named, the message).
BAD = [
    # posterior and latent_dim
    (dict(posterior="hexagon"), "posterior", "unknown posterior 'hexagon'"),
    (dict(posterior=5), "posterior", r"posterior must be a string; got 5 \(int\)"),
    (dict(posterior="band04"), "posterior", "unknown posterior 'band04'"),
    (dict(posterior="band16"), "posterior", "latent_dim = 16 allows k <= 15; use band15 or full"),
    (dict(posterior="band" + "9" * 5000), "posterior", "allows k <= 15"),  # int() refuses 5,000 digits
    (dict(posterior="grid", latent_dim=10), "latent_dim", "latent_dim = 10 is not a square"),
    (dict(latent_dim=0), "latent_dim", r"latent_dim must be in \[1, 1024\]; got 0"),
    (dict(latent_dim=MAX_LATENT_DIM + 1), "latent_dim", r"in \[1, 1024\]; got 1025"),
    (dict(latent_dim=True), "latent_dim", r"latent_dim must be an integer; got True \(bool\)"),
    (dict(latent_dim="16"), "latent_dim", r"must be an integer; got '16' \(str\)"),
    (dict(latent_dim=16.0), "latent_dim", r"must be an integer; got 16.0 \(float\)"),
    # likelihood, activation, objective
    (dict(likelihood="gaussian"), "likelihood", "unknown likelihood 'gaussian'; choose one of bernoulli"),
    (dict(likelihood=None), "likelihood", "likelihood must be a string"),
    (dict(activation="foo"), "activation", "activation must be a Keras activation name .*; got 'foo'"),
    (dict(activation=""), "activation", "Keras activation name"),
    (dict(activation="Relu"), "activation", "Keras activation name"),
    (dict(activation="get"), "activation", "Keras activation name"),  # keras' own helpers, found by name
    (dict(activation="serialize"), "activation", "Keras activation name"),
    (dict(activation="deserialize"), "activation", "Keras activation name"),
    (dict(activation="keras_export"), "activation", "Keras activation name"),
    (dict(activation="relu\nrm -rf"), "activation", r"got 'relu\\nrm -rf'"),  # one line
    (dict(activation=None), "activation", "activation must be a string"),
    (dict(objective="vimco"), "objective", "objective must be 'elbo' or 'iwae'; got 'vimco'"),
    # hidden_units
    (dict(hidden_units=(200, 0)), "hidden_units", r"hidden_units must be positive integers.*; got \(200, 0\)"),
    (dict(hidden_units="200"), "hidden_units", "got '200'"),
    (dict(hidden_units=200), "hidden_units", "got 200"),
    (dict(hidden_units=(True,)), "hidden_units", r"got \(True,\)"),
    (dict(hidden_units=(2.0,)), "hidden_units", r"got \(2.0,\)"),
    (dict(hidden_units=[[200]]), "hidden_units", r"got \[\[200\]\]"),
    # integers
    (dict(num_samples=0), "num_samples", "num_samples must be >= 1; got 0"),
    (dict(warmup_epochs=-1), "warmup_epochs", "warmup_epochs must be >= 0; got -1"),
    (dict(warmup_epochs=2.5), "warmup_epochs", "must be an integer"),
    (dict(batch_size=0), "batch_size", "batch_size must be >= 1; got 0"),
    (dict(batch_size=False), "batch_size", "must be an integer"),
    (dict(epochs=0), "epochs", "epochs must be >= 1; got 0"),
    (dict(steps_per_execution=0), "steps_per_execution", "steps_per_execution must be >= 1"),
    (dict(seed=-1), "seed", r"seed must be in \[0, 2\*\*31 - 1 = 2147483647\]; got -1"),
    (dict(seed=MAX_SEED + 1), "seed", "got 2147483648"),
    (dict(seed=10**5000), "seed", "got an integer of 16610 bits"),  # repr() refuses 5,000 digits
    (dict(seed="0"), "seed", "seed must be an integer"),
    (dict(max_examples=MIN_EXAMPLES - 1), "max_examples",
     r"max_examples must be >= 6 \(training holds out .* for validation\) or None \(all\); got 5"),
    (dict(max_examples=0), "max_examples", ">= 6"),
    (dict(max_examples=100.0), "max_examples", "must be an integer"),
    # floats
    (dict(learning_rate=0), "learning_rate", "learning_rate must be > 0; got 0.0"),
    (dict(learning_rate=math.inf), "learning_rate", "learning_rate must be finite; got inf"),
    (dict(learning_rate=math.nan), "learning_rate", "must be finite; got nan"),
    (dict(learning_rate=10**400), "learning_rate", "must be finite"),  # float() overflows
    (dict(learning_rate="1e-3"), "learning_rate", r"learning_rate must be a number; got '1e-3' \(str\)"),
    (dict(learning_rate=True), "learning_rate", "must be a number"),
    (dict(clip_global_norm=-1.0), "clip_global_norm", r"clip_global_norm must be > 0 \(or None: no clipping\)"),
    (dict(clip_global_norm=0), "clip_global_norm", "> 0"),
    (dict(clip_global_norm=math.inf), "clip_global_norm", "must be finite"),
    (dict(alpha=0.5), "alpha", r"alpha must be in \[0, 0.5\); got 0.5"),
    (dict(alpha=-0.01), "alpha", r"in \[0, 0.5\)"),
    (dict(alpha=math.nan), "alpha", "alpha must be finite; got nan"),
    (dict(diagonal_floor=0.0), "diagonal_floor", "diagonal_floor must be > 0; got 0.0"),
    (dict(diagonal_floor=-math.inf), "diagonal_floor", "must be finite"),
    # bools
    (dict(analytic_kl=1), "analytic_kl", r"analytic_kl must be a bool \(true or false\); got 1 \(int\)"),
    (dict(analytic_kl="false"), "analytic_kl", "must be a bool"),
    (dict(jit_compile=None), "jit_compile", "jit_compile must be a bool"),
    (dict(output_bias_from_data=1), "output_bias_from_data", "output_bias_from_data must be a bool"),
    # the learning-rate schedule, the output bias
    (dict(learning_rate_schedule="step"), "learning_rate_schedule",
     "learning_rate_schedule must be 'constant' or 'iwae'; got 'step'"),
    (dict(output_bias_from_data=True, likelihood="logit_normal_grid"), "output_bias_from_data",
     "^output_bias_from_data starts the Bernoulli decoder's logits .*the likelihood 'logit_normal_grid' has no such "
     "bias: use bernoulli, or false"),
    # layer 1's prior: N(0, I) at the top, else a structure that fits latent_dim
    (dict(prior="band4"), "prior", r"^layer 1: the top layer's prior is N\(0, I\): use 'standard'; got 'band4'"),
    (dict(prior=None), "prior", "^prior must be a string"),
    (dict(upper_layers=[TOP]), "prior", r"^layer 1: layer 2 lies above, so the prior is the conditional "
     r"p\(z1 \| z2\): choose a structure such as diagonal or band4"),
    (_stacked(TOP, prior="hexagon"), "prior", "^layer 1: unknown prior 'hexagon'; choose one of diagonal, chain"),
    (_stacked(TOP, prior="band16"), "prior", "^layer 1: prior 'band16' links .* allows k <= 15; use band15 or full"),
    (_stacked(TOP, prior="grid", latent_dim=10), "prior",
     "^layer 1: prior 'grid' lays the latents on a square grid; latent_dim = 10 is not a square"),
    # upper layers: each field checked like layer 1's, the message naming the layer
    (_stacked({**TOP, "prior": "diagonal"}), "upper_layers", r"^layer 2: the top layer's prior is N\(0, I\)"),
    (_stacked(TOP, TOP), "upper_layers", r"^layer 2: layer 3 lies above, so the prior is the conditional "
     r"p\(z2 \| z3\)"),
    (_stacked(BELOW, {**TOP, "prior": "chain"}), "upper_layers", "^layer 3: the top layer's prior is N"),
    (_stacked({**BELOW, "prior": "hexagon"}, TOP), "upper_layers", "^layer 2: unknown prior 'hexagon'"),
    (_stacked({**BELOW, "prior": "grid"}, TOP), "upper_layers", "^layer 2: prior 'grid' lays the latents on a "
     "square grid; latent_dim = 8 is not a square"),
    (_stacked({**TOP, "prior": 4}), "upper_layers", r"^layer 2: prior must be a string; got 4 \(int\)"),
    (_stacked({**TOP, "latent_dim": 0}), "upper_layers", r"^layer 2: latent_dim must be in \[1, 1024\]; got 0"),
    (_stacked(BELOW, {**TOP, "latent_dim": MAX_LATENT_DIM + 1}), "upper_layers", "^layer 3: latent_dim must be in"),
    (_stacked({**TOP, "latent_dim": True}), "upper_layers", "^layer 2: latent_dim must be an integer"),
    (_stacked({**TOP, "latent_dim": "8"}), "upper_layers", "^layer 2: latent_dim must be an integer"),
    (_stacked({**TOP, "hidden_units": (16, 0)}), "upper_layers", "^layer 2: hidden_units must be positive integers"),
    (_stacked({**TOP, "hidden_units": "16"}), "upper_layers", "^layer 2: hidden_units must be positive integers"),
    (_stacked({**TOP, "posterior": "hexagon"}), "upper_layers", "^layer 2: unknown posterior 'hexagon'"),
    (_stacked({**TOP, "posterior": "band8"}), "upper_layers", "^layer 2: posterior 'band8' links .* allows k <= 7"),
    (_stacked({**TOP, "posterior": "grid"}), "upper_layers", "^layer 2: posterior 'grid' lays the latents on a "
     "square grid; latent_dim = 8 is not a square"),
    (_stacked({**TOP, "posterior": None}), "upper_layers", "^layer 2: posterior must be a string"),
    (_stacked({**TOP, "size": 8}), "upper_layers", r"^layer 2: unknown keys \['size'\]; a layer has the keys "
     "latent_dim, hidden_units, posterior and prior"),
    (_stacked({"latent_dim": 8}), "upper_layers", r"^layer 2: the layer lacks the keys \['hidden_units'\]"),
    (_stacked(5), "upper_layers", r"^layer 2: a layer must be an object with the keys latent_dim, hidden_units, "
     r"posterior and prior; got 5 \(int\)"),
    (_stacked([8, [16]]), "upper_layers", r"^layer 2: a layer must be an object .*; got \[8, \[16\]\] \(list\)"),
    (_stacked(BELOW, "8:16:band2"), "upper_layers", "^layer 3: a layer must be an object"),
    (dict(prior="diagonal", upper_layers=TOP), "upper_layers", r"^upper_layers must be a list of the layers above "
     r"layer 1, bottom to top, each an object with the keys latent_dim, hidden_units, posterior and prior; got \{"),
    (dict(upper_layers="8:16:band2"), "upper_layers", "^upper_layers must be a list"),
    (dict(upper_layers=None), "upper_layers", "^upper_layers must be a list"),
    (_stacked(*[BELOW] * (MAX_STOCHASTIC_LAYERS - 1), TOP), "upper_layers", "^upper_layers holds 8 layers, but a "
     "model has at most 8 stochastic layers: layer 1 and 7 upper ones"),
]


@pytest.mark.parametrize("changes,field,message", BAD)
def test_bad_configurations_are_rejected_naming_the_field(changes, field, message):
  with pytest.raises(ConfigError, match=message) as error:
    VAEConfig(**changes)
  assert error.value.field == field
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("field", FIELDS)
def test_every_field_checks_its_type(field):
  with pytest.raises(ConfigError, match=f"^{field} must be") as error:
    VAEConfig(**{field: object()})
  assert error.value.field == field


@pytest.mark.parametrize("changes", [
    dict(hidden_units=()),  # no hidden layer: linear encoder and decoder
    dict(hidden_units=[64, 32]),
    dict(posterior="band15"), dict(posterior="band0"), dict(posterior="full", latent_dim=MAX_LATENT_DIM),
    dict(posterior="chain", latent_dim=1), dict(posterior="extended_grid", latent_dim=4),
    dict(seed=MAX_SEED), dict(max_examples=MIN_EXAMPLES), dict(alpha=0), dict(alpha=0.49),
    dict(clip_global_norm=None), dict(warmup_epochs=0), dict(activation="relu"), dict(activation="tanh"),
    dict(activation="softmax"), dict(activation="gelu"), dict(activation="linear"),
    dict(likelihood="logit_normal_grid", alpha=0.05), dict(objective="iwae", num_samples=5, analytic_kl=False),
    dict(learning_rate_schedule="iwae"), dict(output_bias_from_data=True), dict(prior="standard"),
    _stacked(TOP), _stacked(BELOW, BELOW, TOP, prior="full"), _stacked(*[BELOW] * (MAX_STOCHASTIC_LAYERS - 2), TOP),
    _stacked(dict(latent_dim=1, hidden_units=()), prior="band15"),  # no hidden layer, one latent
    _stacked({**BELOW, "latent_dim": 4, "prior": "gershgorin_grid", "posterior": "extended_grid"}, TOP, prior="grid"),
    dict(prior="band4", upper_layers=(StochasticLayer(50, (100, 100), "band4"),)),
])
def test_edge_configurations_are_accepted(changes):
  config = VAEConfig(**changes)
  assert VAEConfig.from_json(config.to_json()) == config


def test_values_are_normalized():
  """ints in float fields become floats, numpy scalars Python numbers, hidden_units a tuple: JSON round trips."""
  config = VAEConfig(learning_rate=1, clip_global_norm=5, alpha=np.float32(0.25), seed=np.int64(3),
                     hidden_units=[np.int32(8), 4], max_examples=np.int16(100))
  assert type(config.learning_rate) is float and config.learning_rate == 1.0 and config.clip_global_norm == 5.0
  assert type(config.alpha) is float and type(config.seed) is int and type(config.max_examples) is int
  assert config.hidden_units == (8, 4) and all(type(units) is int for units in config.hidden_units)
  assert VAEConfig.from_json(config.to_json()) == config


def test_upper_layers_are_stochastic_layers_however_given():
  """Dicts and StochasticLayers (lists, numpy ints in them) become the same checked StochasticLayers: the
  configurations are equal, hashable, and the upper layers part of the run."""
  from_dicts = VAEConfig(**_stacked({**BELOW, "latent_dim": np.int64(8), "hidden_units": [np.int32(16)]}, TOP))
  from_layers = VAEConfig(prior="diagonal", upper_layers=(StochasticLayer(8, [16], "band2", "chain"),
                                                          StochasticLayer(8, (16,), posterior="band2")))
  assert from_dicts == from_layers and hash(from_dicts) == hash(from_layers)
  assert from_dicts.upper_layers == (StochasticLayer(8, (16,), "band2", "chain"), StochasticLayer(8, (16,), "band2"))
  assert all(type(layer) is StochasticLayer and type(layer.hidden_units) is tuple and type(layer.latent_dim) is int
             for layer in from_dicts.upper_layers)
  assert from_dicts.same_run_as(dataclasses.replace(from_dicts, steps_per_execution=4))
  assert not from_dicts.same_run_as(VAEConfig(**_stacked(BELOW, {**TOP, "latent_dim": 4})))
  assert not from_dicts.same_run_as(VAEConfig(**_stacked(TOP)))


def test_stochastic_layers_are_layer_1_then_the_upper_layers():
  assert VAEConfig().stochastic_layers == (StochasticLayer(16, (200, 200), "diagonal", "standard"),)
  config = VAEConfig(latent_dim=100, hidden_units=(200, 200), posterior="band4", prior="band4",
                     upper_layers=[dict(latent_dim=50, hidden_units=(100, 100), posterior="chain")])
  assert config.stochastic_layers == (StochasticLayer(100, (200, 200), "band4", "band4"),
                                      StochasticLayer(50, (100, 100), "chain", "standard"))


def test_a_grid_posterior_takes_what_its_stencil_takes(monkeypatch):
  """A 1 x 1 grid is the stencil module's call; a size a stencil refuses is a ConfigError about latent_dim."""
  try:
    stencils.grid(1, 1)
  except ValueError:
    with pytest.raises(ConfigError) as error:
      VAEConfig(posterior="grid", latent_dim=1)
    assert error.value.field == "latent_dim"
  else:
    assert VAEConfig(posterior="grid", latent_dim=1).latent_dim == 1

  def refuse(height, width):
    raise ValueError(f"no {height} x {width} grid here.")

  monkeypatch.setattr(config_module.stencils, "grid", refuse)
  with pytest.raises(ConfigError, match=r"'grid' cannot be laid out on latent_dim = 4: no 2 x 2 grid") as error:
    VAEConfig(posterior="grid", latent_dim=4)
  assert error.value.field == "latent_dim"


def test_the_bounds_are_those_of_the_consumers(tiny_mnist):
  """MAX_SEED is the largest int32 (the VAE's noise seed; one more wraps round); MIN_EXAMPLES the fewest a run's
  train / validation split takes."""
  from tfggm.mnist.training import RunData
  assert tf.constant(MAX_SEED, tf.int32).numpy() == MAX_SEED
  assert tf.constant(MAX_SEED + 1, tf.int32).numpy() < 0
  run_data = RunData(VAEConfig(max_examples=MIN_EXAMPLES), tiny_mnist, allow_nonstandard_counts=True)
  assert len(run_data.train_images) >= 1 and len(run_data.validation) >= 1
  fewer = VAEConfig(max_examples=MIN_EXAMPLES)
  object.__setattr__(fewer, "max_examples", MIN_EXAMPLES - 1)  # past the check
  with pytest.raises(DataError, match="num_validation"):
    RunData(fewer, tiny_mnist, allow_nonstandard_counts=True)


# config.json


def _stored(**changes):
  return json.loads(VAEConfig(**changes).to_json())


def test_load_round_trips(tmp_path):
  config = VAEConfig(posterior="band4", hidden_units=(64, 32), clip_global_norm=None, max_examples=1000, seed=7)
  (tmp_path / "config.json").write_text(config.to_json())
  assert json.loads((tmp_path / "config.json").read_text())["hidden_units"] == [64, 32]  # JSON has no tuples
  assert VAEConfig.load(tmp_path / "config.json") == config
  assert VAEConfig.load(str(tmp_path / "config.json")) == config
  (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + config.to_json().encode())  # as some editors save
  assert VAEConfig.load(tmp_path / "bom.json") == config


# A config.json as the first version wrote it, before any of OPTIONAL_KEYS existed.
FIRST_CONFIG_JSON = """{
  "activation": "elu", "alpha": 0.01, "analytic_kl": true, "batch_size": 32, "clip_global_norm": 100.0,
  "diagonal_floor": 0.001, "epochs": 7, "hidden_units": [200, 200], "latent_dim": 16, "learning_rate": 0.001,
  "likelihood": "bernoulli", "max_examples": null, "num_samples": 1, "objective": "elbo", "posterior": "diagonal",
  "seed": 0, "warmup_epochs": 5
}"""


def test_keys_added_later_may_be_missing_but_no_others(tmp_path):
  """A config.json from before the keys of OPTIONAL_KEYS existed loads with their defaults: the same one-layer run,
  N(0, I) prior, constant learning rate and zero-initialized output bias."""
  config = VAEConfig.from_json(FIRST_CONFIG_JSON)
  assert config == VAEConfig(epochs=7) and config.same_run_as(VAEConfig(epochs=7))
  assert config.stochastic_layers == (StochasticLayer(16, (200, 200), "diagonal", "standard"),)
  assert (config.learning_rate_schedule, config.output_bias_from_data) == ("constant", False)
  assert set(_stored()) - set(json.loads(FIRST_CONFIG_JSON)) == set(OPTIONAL_KEYS)
  old = {key: value for key, value in _stored(epochs=7).items() if key not in OPTIONAL_KEYS}
  assert VAEConfig.from_json(json.dumps(old)) == VAEConfig(epochs=7)
  del old["latent_dim"], old["seed"]
  with pytest.raises(ConfigError, match=r"lacks the keys \['latent_dim', 'seed'\]; it is incomplete"):
    VAEConfig.from_json(json.dumps(old))


def test_upper_layers_round_trip_as_objects_of_four_keys(tmp_path):
  config = VAEConfig(**_stacked({**BELOW, "hidden_units": ()}, dict(latent_dim=4, hidden_units=(32, 8)),
                                learning_rate_schedule="iwae", output_bias_from_data=True))
  stored = json.loads(config.to_json())
  assert stored["upper_layers"] == [dict(latent_dim=8, hidden_units=[], posterior="band2", prior="chain"),
                                    dict(latent_dim=4, hidden_units=[32, 8], posterior="diagonal", prior="standard")]
  assert stored["prior"] == "diagonal" and stored["learning_rate_schedule"] == "iwae"
  assert stored["output_bias_from_data"] is True
  (tmp_path / "config.json").write_text(config.to_json())
  assert VAEConfig.load(tmp_path / "config.json") == config
  assert VAEConfig.from_json(json.dumps(_stored())) == VAEConfig()  # upper_layers: []


CORRUPT = [
    ("", None, "the configuration is empty"),
    (" \n\t", None, "the configuration is empty"),
    ('{"latent_dim": 16, "posterior": "ch', None, r"the configuration is not valid JSON \(Unterminated string"),
    (VAEConfig().to_json()[:-40], None, "the configuration is not valid JSON"),  # truncated
    ("{'latent_dim': 16}", None, r"the configuration is not valid JSON \(Expecting property name enclosed in double"),
    ("[" * 100_000 + "]" * 100_000, None, "the configuration is no object of settings: its JSON is nested too deeply"),
    ('{"seed": ' + "9" * 5000 + "}", None, "the configuration is not valid JSON .*4300 digits"),
    ("[16, 200]", None, "the configuration must be a JSON object of settings; got a list"),
    ('"diagonal"', None, "the configuration must be a JSON object of settings; got a str"),
    ("null", None, "the configuration must be .*; got a NoneType"),
    ("16", None, "the configuration must be .*; got a int"),
    ('{"latent_dim": 16, "latent_dim": 4}', None, r"the configuration sets \['latent_dim'\] more than once"),
    ('{"latentdim": 16}', None, r"unknown configuration keys \['latentdim'\]"),
    ({"latent_dim": "16"}, "latent_dim", r"latent_dim must be an integer; got '16' \(str\)"),
    ({"latent_dim": [16]}, "latent_dim", r"latent_dim must be an integer; got \[16\] \(list\)"),
    ({"latent_dim": 16.5}, "latent_dim", "latent_dim must be an integer"),
    ({"latent_dim": None}, "latent_dim", "latent_dim must be an integer"),
    ({"hidden_units": {"0": 200}}, "hidden_units", "hidden_units must be positive integers"),
    ({"hidden_units": "200,200"}, "hidden_units", "hidden_units must be positive integers"),
    ({"analytic_kl": "true"}, "analytic_kl", "analytic_kl must be a bool"),
    ({"learning_rate": "NaN"}, "learning_rate", "learning_rate must be a number"),
    ({"learning_rate": math.nan}, "learning_rate", "learning_rate must be finite; got nan"),  # written as NaN
    ({"posterior": ["chain"]}, "posterior", "posterior must be a string"),
    ({"activation": "foo"}, "activation", "activation must be a Keras activation name"),
    # a layer in config.json has every key of StochasticLayer, no other
    ({"prior": "diagonal", "upper_layers": [{"latent_dim": 8, "hidden_units": [16]}]}, "upper_layers",
     r"layer 2: the layer lacks the keys \['posterior', 'prior'\]"),
    ({"prior": "diagonal", "upper_layers": [{**BELOW, "hidden_units": [16]}, {"latent_dim": 8, "hidden_units": [],
                                                                              "posterior": "chain"}]},
     "upper_layers", r"layer 3: the layer lacks the keys \['prior'\]"),
    ({"prior": "diagonal", "upper_layers": [{**TOP, "prior": "standard", "dim": 8}]}, "upper_layers",
     r"layer 2: unknown keys \['dim'\]"),
    ({"prior": "diagonal", "upper_layers": {"latent_dim": 8}}, "upper_layers", "upper_layers must be a list"),
    ({"prior": "diagonal", "upper_layers": ["8:16:band2"]}, "upper_layers", "layer 2: a layer must be an object"),
    ({"upper_layers": [{**TOP, "prior": "standard"}]}, "prior", "layer 1: layer 2 lies above"),
    ('{"upper_layers": [{"latent_dim": 8, "latent_dim": 4}]}', None, r"the configuration sets \['latent_dim'\] "
     "more than once"),
]


@pytest.mark.parametrize("content,field,message", CORRUPT)
def test_a_corrupt_config_json_is_a_one_line_config_error(tmp_path, content, field, message):
  """`content`: the file's text, or changes to a valid configuration's JSON."""
  if isinstance(content, dict):
    content = json.dumps({**_stored(), **content})
  path = tmp_path / "config.json"
  path.write_text(content)
  with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {message}") as error:
    VAEConfig.load(path)
  assert error.value.field == field
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe\x00garbage\x80", r"not UTF-8 text \(invalid start byte at byte 0\); the file is corrupt"),
    (b'{"latent_dim": 16,\x00\x9c', "not UTF-8 text"),
    (b"\x1f\x8b\x08\x00" + bytes(range(256)), "not UTF-8 text"),  # a gzip header
])
def test_binary_garbage_is_a_config_error(tmp_path, content, message):
  path = tmp_path / "config.json"
  path.write_bytes(content)
  with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: the configuration is {message}"):
    VAEConfig.load(path)


def test_an_unreadable_config_json_is_a_config_error(tmp_path, monkeypatch):
  with pytest.raises(ConfigError, match=r"nowhere.json: cannot read the configuration \(No such file or directory\)"):
    VAEConfig.load(tmp_path / "nowhere.json")
  with pytest.raises(ConfigError, match=r": cannot read the configuration \(Is a directory\)"):
    VAEConfig.load(tmp_path)
  path = tmp_path / "config.json"
  path.write_text(VAEConfig().to_json())

  def refuse(self):
    raise PermissionError(13, "Permission denied", str(self))  # chmod would not stop root

  monkeypatch.setattr(pathlib.Path, "read_bytes", refuse)
  with pytest.raises(ConfigError) as error:
    VAEConfig.load(path)
  assert str(error.value) == f"{path}: cannot read the configuration (Permission denied)."


@pytest.mark.parametrize("field", FIELDS)
def test_any_json_value_of_any_field_loads_or_is_a_config_error(field):
  """Every JSON type (and the non-finite numbers Python's json reads) in every field: a config or a ConfigError."""
  for value in ("null", "true", "false", "0", "-1", "1", "7", "9223372036854775808", "0.5", "1e308", "1e400", "NaN",
                "-Infinity", '"x"', '"elu"', "[]", "[1]", '["a"]', "{}"):
    try:
      VAEConfig.from_json(json.dumps({**_stored(), field: json.loads(value)}))
    except ConfigError as error:
      assert error.field == field, (value, error)


def test_no_hidden_units_build_linear_networks():
  """hidden_units=() is accepted because the networks take it: images -> posterior parameters in one Dense."""
  from tfggm.mnist.data import IMAGE_SHAPE
  from tfggm.mnist.networks import build_vae
  model = build_vae(VAEConfig(hidden_units=(), latent_dim=4), IMAGE_SHAPE)
  assert [layer.name for layer in model.encoder.layers] == ["images", "posterior_params", "posterior"]
  assert model.decoder(tf.zeros([2, 4])).sample(seed=[1, 2]).shape == (2, 784)


# the learning-rate schedules


def _stage_lengths(epochs: int, learning_rate: float = 1e-3) -> list[int]:
  """The epochs of each of the 8 IWAE stages, read from the rates of `learning_rate_at`."""
  config = VAEConfig(epochs=epochs, learning_rate=learning_rate, learning_rate_schedule="iwae")
  stages = [-7 * math.log10(learning_rate_at(config, epoch) / learning_rate) for epoch in range(epochs)]
  assert all(abs(stage - round(stage)) < 1e-9 for stage in stages)  # every rate is a stage's
  stages = [round(stage) for stage in stages]
  return [stages.count(i) for i in range(8)]


def test_the_constant_schedule_is_the_learning_rate():
  config = VAEConfig(epochs=10, learning_rate=3e-4)
  assert [learning_rate_at(config, epoch) for epoch in range(10)] == [3e-4] * 10


def test_the_iwae_schedule_over_3280_epochs_is_the_papers():
  assert _stage_lengths(3280) == [3**i for i in range(8)]
  config = VAEConfig(epochs=3280, learning_rate_schedule="iwae")
  assert learning_rate_at(config, 0) == 1e-3 and learning_rate_at(config, 3) == 1e-3 * 10 ** (-1 / 7)
  assert learning_rate_at(config, 4) == 1e-3 * 10 ** (-2 / 7)
  assert learning_rate_at(config, 1092) == 1e-3 * 10 ** (-6 / 7)
  assert learning_rate_at(config, 1093) == learning_rate_at(config, 3279) == pytest.approx(1e-4, rel=1e-12)


@pytest.mark.parametrize("epochs,lengths", [
    (328, [1, 0, 0, 3, 8, 24, 73, 219]),   # a tenth of the paper's: stages rounding to no epoch are skipped
    (205, [1, 0, 0, 2, 5, 15, 45, 137]),   # stage 3 ends at 205 * 40 / 3280 = 2.5, rounded up
    (8, [1, 0, 0, 0, 0, 0, 2, 5]),
    (2, [1, 0, 0, 0, 0, 0, 0, 1]),
    (1, [1, 0, 0, 0, 0, 0, 0, 0]),
])
def test_the_iwae_schedule_is_compressed_into_the_epochs(epochs, lengths):
  assert _stage_lengths(epochs) == lengths


@pytest.mark.parametrize("epochs", [*range(1, 40), 99, 500, 1000, 3279, 3281, 10_000])
def test_the_iwae_schedule_starts_at_the_learning_rate_ends_a_tenth_of_it_and_never_rises(epochs):
  config = VAEConfig(epochs=epochs, learning_rate=2e-3, learning_rate_schedule="iwae")
  rates = [learning_rate_at(config, epoch) for epoch in range(epochs)]
  assert rates[0] == 2e-3
  assert epochs == 1 or rates[-1] == pytest.approx(2e-4, rel=1e-12)
  assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))


@pytest.mark.parametrize("schedule", ["constant", "iwae"])
def test_an_epoch_outside_the_run_is_a_value_error(schedule):
  config = VAEConfig(epochs=5, learning_rate_schedule=schedule)
  for epoch in (-1, 5):
    with pytest.raises(ValueError, match=rf"epoch must be in \[0, 5\) .*; got {epoch}"):
      learning_rate_at(config, epoch)


# the command line: tfggm train's flags


def _parsed(*flags: str) -> VAEConfig:
  return cli._config_from(cli.build_parser().parse_args(["train", "runs/h2", *flags]))


def test_the_flags_default_to_the_default_configuration():
  assert _parsed() == VAEConfig()


def test_the_iwae_two_layer_model_from_the_command_line():
  config = _parsed(*"--latent-dim 100 --hidden-units 200 200 --activation tanh --posterior band4 --prior band4 "
                   "--upper-layer 50:100,100:band4".split())
  assert config == VAEConfig(latent_dim=100, hidden_units=(200, 200), activation="tanh", posterior="band4",
                             prior="band4", upper_layers=(StochasticLayer(50, (100, 100), "band4", "standard"),))


def test_upper_layers_stack_in_order_with_their_priors_and_the_iwae_protocol():
  config = _parsed("--prior", "diagonal", "--upper-layer", "50::chain:band3", "--upper-layer", "20:64:full",
                   "--learning-rate-schedule", "iwae", "--output-bias-from-data", "--epochs", "3280")
  assert config.upper_layers == (StochasticLayer(50, (), "chain", "band3"), StochasticLayer(20, (64,), "full"))
  assert config.learning_rate_schedule == "iwae" and config.output_bias_from_data
  assert learning_rate_at(config, 3279) == pytest.approx(1e-4)


@pytest.mark.parametrize("spec", ["50", "50:100", "50:100:", "50:100:band4:", "50:100:band4:band4:band4", ":100:band4",
                                  "x:100:band4", "-5:100:band4", "50:100,,100:band4", "50:100,:band4", "50:,100:band4",
                                  "50:100 100:band4", "50:1e2:band4", "50:100;band4", ""])
def test_a_malformed_upper_layer_is_a_usage_error_showing_the_form(spec, capsys):
  with pytest.raises(SystemExit) as exit_:
    _parsed("--prior", "diagonal", f"--upper-layer={spec}")  # = : argparse takes "-5..." for a flag
  assert exit_.value.code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error == ("tfggm train: error: argument --upper-layer: expected LATENT_DIM:HIDDEN[,HIDDEN...]:POSTERIOR"
                   f"[:PRIOR], e.g. 50:100,100:band4 or 50::diagonal; got {spec!r}")


def test_an_upper_layer_with_a_number_too_long_to_read_is_a_usage_error(capsys):
  with pytest.raises(SystemExit):
    _parsed("--prior", "diagonal", "--upper-layer", "9" * 5000 + ":100:band4")
  assert capsys.readouterr().err.strip().endswith("or 50::diagonal; got a number too long to read")


@pytest.mark.parametrize("flags,message", [
    (["--prior", "band4"], "argument --prior: layer 1: the top layer's prior is N"),
    (["--upper-layer", "50:100:band4"], "argument --prior: layer 1: layer 2 lies above"),
    (["--prior", "diagonal", "--upper-layer", "0:100:band4"], r"argument --upper-layer: layer 2: latent_dim must be"),
    (["--prior", "diagonal", "--upper-layer", "8:16:hexagon"], "argument --upper-layer: layer 2: unknown posterior"),
    (["--prior", "diagonal", "--upper-layer", "8:16:chain", "--upper-layer", "8:16:chain"],
     "argument --upper-layer: layer 2: layer 3 lies above"),
    (["--prior", "diagonal", *["--upper-layer", "8:16:chain:chain"] * 7, "--upper-layer", "8:16:chain"],
     "argument --upper-layer: upper_layers holds 8 layers, but a model has at most 8 stochastic layers"),
    (["--likelihood", "logit_normal_grid", "--output-bias-from-data"], "argument --output-bias-from-data: "),
])
def test_a_bad_hierarchy_is_a_config_error_naming_its_flag(flags, message):
  with pytest.raises(ConfigError, match=f"^{message}"):
    _parsed(*flags)


def test_an_unknown_learning_rate_schedule_is_a_usage_error(capsys):
  with pytest.raises(SystemExit):
    _parsed("--learning-rate-schedule", "step")
  assert "argument --learning-rate-schedule: invalid choice: 'step'" in capsys.readouterr().err
