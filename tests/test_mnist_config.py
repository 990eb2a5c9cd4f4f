"""The run configuration: every field checked when built, ConfigError naming the field, corrupt config.json files."""

import dataclasses
import json
import math
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from tfggm import stencils
from tfggm.mnist import config as config_module
from tfggm.mnist.config import MAX_LATENT_DIM, MAX_SEED, MIN_EXAMPLES, ConfigError, VAEConfig
from tfggm.mnist.data import DataError

FIELDS = [field.name for field in dataclasses.fields(VAEConfig)]


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


def test_keys_added_later_may_be_missing_but_no_others(tmp_path):
  """A config.json from before jit_compile and steps_per_execution existed loads with their defaults."""
  old = {key: value for key, value in _stored(epochs=7).items() if key not in ("jit_compile", "steps_per_execution")}
  assert VAEConfig.from_json(json.dumps(old)) == VAEConfig(epochs=7)
  del old["latent_dim"], old["seed"]
  with pytest.raises(ConfigError, match=r"lacks the keys \['latent_dim', 'seed'\]; it is incomplete"):
    VAEConfig.from_json(json.dumps(old))


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
