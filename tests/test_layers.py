"""Keras layers: params_size, outputs as distributions and tensors, .keras and SavedModel round trips."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import STENCILS
from tfggm import GaussianGraphicalModel, MultivariateLogitNormal, stencils
from tfggm.layers import GaussianGraphicalModelLayer, IndependentBernoulliLayer, MultivariateLogitNormalLayer


def _model(stencil, layer, inputs=8):
  x = tf_keras.Input([inputs])
  params = tf_keras.layers.Dense(layer.params_size(stencil) if stencil is not None else 12)(x)
  return tf_keras.Model(x, layer(params))


@pytest.mark.parametrize("parameterization", ["factor", "precision"])
def test_posterior_layer_outputs_a_ggm_that_is_also_a_tensor(stencil, parameterization):
  assert GaussianGraphicalModelLayer.params_size(stencil) == stencil.n + stencil.num_params
  model = _model(stencil, GaussianGraphicalModelLayer(stencil, parameterization))
  q = model(np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32))
  assert q.batch_shape == (3,) and q.event_shape == (stencil.n,)
  assert tf.convert_to_tensor(q).shape == (3, stencil.n)  # its sample, downstream
  assert tf_keras.layers.Dense(2)(q).shape == (3, 2)
  assert np.all(np.isfinite(q.variance()))


def _round_trip_models(tmp_path):
  grid = stencils.grid(3, 3)
  return {
      "posterior_precision": _model(stencils.extended_grid(4, 4),
                                    GaussianGraphicalModelLayer(stencils.extended_grid(4, 4), "precision")),
      "posterior_custom_mask": _model(stencils.Stencil(STENCILS["random_custom"]().mask),
                                      GaussianGraphicalModelLayer(stencils.Stencil(STENCILS["random_custom"]().mask))),
      "logit_normal": _model(grid, MultivariateLogitNormalLayer(grid, alpha=0.05)),
      "bernoulli": _model(None, IndependentBernoulliLayer(12)),
  }


@pytest.mark.parametrize("save_format", ["keras", "tf"])
def test_models_with_the_layers_save_and_load_with_the_same_outputs(tmp_path, save_format):
  x = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
  for name, model in _round_trip_models(tmp_path).items():
    path = str(tmp_path / (f"{name}.keras" if save_format == "keras" else name))
    model.save(path, save_format=None if save_format == "keras" else "tf")
    loaded = tf_keras.models.load_model(path)
    before, after = model(x), loaded(x)
    probe = np.clip(np.random.default_rng(2).uniform(0.1, 0.9, size=before.event_shape), 0, 1).astype(np.float32)
    if name == "bernoulli":
      probe = (probe > 0.5).astype(np.float32)
    np.testing.assert_allclose(after.log_prob(probe), before.log_prob(probe), rtol=1e-6, err_msg=name)
    layer = model.layers[-1]
    assert type(loaded.layers[-1]) is type(layer)
    assert loaded.layers[-1].get_config() == layer.get_config()


def test_distribution_types_and_alpha():
  grid = stencils.grid(3, 3)
  d = _model(grid, MultivariateLogitNormalLayer(grid, alpha=0.05))(np.zeros((2, 8), np.float32))
  assert isinstance(d.tensor_distribution, MultivariateLogitNormal) and d.alpha == 0.05
  q = _model(grid, GaussianGraphicalModelLayer(grid))(np.zeros((2, 8), np.float32))
  assert isinstance(q.tensor_distribution, GaussianGraphicalModel)


def test_bad_inputs_raise_clear_errors():
  layer = GaussianGraphicalModelLayer(stencils.chain(4))
  with pytest.raises(ValueError, match=r"params_size\); got shape \(2, 5\)"):
    layer(tf.zeros([2, 5]))
  with pytest.raises(ValueError, match="parameterization"):
    GaussianGraphicalModelLayer(stencils.chain(4), "cholesky")
  with pytest.raises(ValueError, match="convert_to_tensor_fn"):
    GaussianGraphicalModelLayer(stencils.chain(4), convert_to_tensor_fn="median")


def test_factor_layers_keep_only_the_stencils_active_lags():
  stencil = stencils.grid(4, 5)  # lags (0, 1, 5) of b = 5
  params = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
  factor = _model(stencil, GaussianGraphicalModelLayer(stencil))(params)
  precision = _model(stencil, GaussianGraphicalModelLayer(stencil, "precision"))(params)
  assert factor.lags == (0, 1, 5) and factor.precision_factor_bands.shape == (2, 3, 20)
  assert precision.lags == tuple(range(6)) and precision.precision_factor_bands.shape == (2, 6, 20)
  bands = factor.factor_bands_at_every_lag()
  np.testing.assert_array_equal(np.asarray(bands) * ~stencil.mask, 0.0)
  x = np.random.default_rng(2).normal(size=(2, 20)).astype(np.float32)
  full = GaussianGraphicalModel(factor.mean(), bands)
  np.testing.assert_allclose(factor.log_prob(x), full.log_prob(x), rtol=1e-5)
