"""Bad inputs to the distributions, the bijector, the KLs and the layers: clear errors that name shapes and dtypes.

Static problems (shapes, dtypes, Python arguments) raise at once, in one registry of cases; problems that only the
data show (a width unknown statically, NaN values, a negative sample shape in a tensor) fail at run time, in graph
mode too: always for a layer's parameter width, under `validate_args` for the rest (TFP's convention).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfggm import GaussianGraphicalModel, MultivariateLogitNormal, PrecisionFactorSolve, parameterizations, stencils
from tfggm.distributions import hutchinson_trace, kl_to_diagonal_normal
from tfggm.layers import GaussianGraphicalModelLayer, IndependentBernoulliLayer, MultivariateLogitNormalLayer

tfd = tfp.distributions


def _ggm(n=4, batch=(), dtype=np.float32, **kwargs):
  return GaussianGraphicalModel(np.zeros(batch + (n,), dtype), np.ones(batch + (2, n), dtype), **kwargs)


def _logit_normal(n=4, **kwargs):
  return MultivariateLogitNormal(np.zeros(n, np.float32), np.ones((2, n), np.float32), **kwargs)


def _layer_output(layer, width, batch=2):
  return layer(tf.zeros([batch, width]))


CHAIN = stencils.chain(3)  # params_size 3 + 5 = 8
LAYERS = {
    "ggm": (lambda **kwargs: GaussianGraphicalModelLayer(CHAIN, **kwargs), 8),
    "logit_normal": (lambda **kwargs: MultivariateLogitNormalLayer(CHAIN, **kwargs), 8),
    "bernoulli": (lambda **kwargs: IndependentBernoulliLayer(3, **kwargs), 3),
}

# name: (a call with a bad input, the error, a regex on its message)
STATIC_CASES = {
    # KL between different event sizes (TFP: "Dimensions 1 and 4 are not compatible"), dtypes, batch shapes.
    "kl_to_mvn_diag_of_other_n": (lambda: tfd.kl_divergence(_ggm(4), tfd.MultivariateNormalDiag(tf.zeros(1))),
                                  ValueError, r"MultivariateNormalDiag.*event shape \(4,\).*event shape \(1,\)"),
    "kl_to_independent_normal_of_other_n": (
        lambda: tfd.kl_divergence(_ggm(4), tfd.Independent(tfd.Normal(tf.zeros(1), 1.0), 1)),
        ValueError, r"Independent.*event shape \(4,\).*event shape \(1,\)"),
    "kl_to_ggm_of_other_n": (lambda: tfd.kl_divergence(_ggm(4), _ggm(1)), ValueError,
                             r"event shape \(4,\).*event shape \(1,\)"),
    "kl_from_ggm_of_other_n": (lambda: tfd.kl_divergence(_ggm(1), _ggm(4)), ValueError,
                               r"event shape \(1,\).*event shape \(4,\)"),
    "kl_between_logit_normals_of_other_n": (lambda: tfd.kl_divergence(_logit_normal(4), _logit_normal(1)),
                                            ValueError, r"event shape \(4,\).*event shape \(1,\)"),
    "kl_float32_to_float64_ggm": (lambda: tfd.kl_divergence(_ggm(), _ggm(dtype=np.float64)), TypeError,
                                  r"float32.*float64"),
    "kl_float32_to_float64_mvn_diag": (
        lambda: tfd.kl_divergence(_ggm(), tfd.MultivariateNormalDiag(tf.zeros(4, tf.float64))), TypeError,
        r"float32.*float64"),
    "kl_batches_that_do_not_broadcast": (
        lambda: tfd.kl_divergence(_ggm(batch=(3,)), tfd.MultivariateNormalDiag(tf.zeros([2, 4]))), ValueError,
        r"batch shape \(3,\).*batch shape \(2,\)"),
    "kl_ggm_batches_that_do_not_broadcast": (lambda: tfd.kl_divergence(_ggm(batch=(3,)), _ggm(batch=(2,))),
                                             ValueError, r"batch shape \(3,\).*batch shape \(2,\)"),
    "kl_to_diagonal_normal_width_1_scale": (lambda: kl_to_diagonal_normal(_ggm(), np.zeros(4), [2.0]), ValueError,
                                            r"scale must have shape \[\.\.\., 4\].*got shape \(1,\)"),
    "kl_to_diagonal_normal_float64_loc": (
        lambda: kl_to_diagonal_normal(_ggm(), tf.zeros(4, tf.float64), np.ones(4)), TypeError,
        r"loc has dtype float64.*dtype float32"),
    "hutchinson_zero_probes": (lambda: hutchinson_trace(_ggm(), np.ones(4), 0), ValueError,
                               r"num_probes must be a positive integer; got 0"),
    "hutchinson_weights_of_other_width": (lambda: hutchinson_trace(_ggm(), np.ones(5), 2), ValueError,
                                          r"weights must have shape \[\.\.\., 4\].*\(5,\)"),
    # Integer parameters (an `[Op:Log]` error before).
    "int32_ggm": (lambda: GaussianGraphicalModel(np.zeros(4, np.int32), np.ones((2, 4), np.int32)), TypeError,
                  r"loc of dtype int32, precision_factor_bands of dtype int32.*floating"),
    "int32_bands_float64_loc": (lambda: GaussianGraphicalModel(np.zeros(4), np.ones((2, 4), np.int32)), TypeError,
                                r"loc of dtype float64, precision_factor_bands of dtype int32"),
    "int32_logit_normal": (lambda: MultivariateLogitNormal(np.zeros(4, np.int32), np.ones((2, 4), np.int32)),
                           TypeError, r"int32.*floating"),
    "int32_bijector": (lambda: PrecisionFactorSolve(np.ones((2, 4), np.int32)), TypeError,
                       r"precision_factor_bands of dtype int32.*floating"),
    # Negative sample shapes (a RandomStandardNormal "Dimension -4 must be >= 0" before).
    "negative_sample_shape": (lambda: _ggm().sample((-1,)), ValueError, r"sample_shape.*non-negative.*\[-1\]"),
    "negative_sample_shape_sample_and_log_prob": (lambda: _ggm().experimental_sample_and_log_prob(-2), ValueError,
                                                  r"sample_shape.*-2"),
    "negative_sample_shape_logit_normal": (lambda: _logit_normal().sample((2, -1)), ValueError,
                                           r"sample_shape.*\[2, -1\]"),
    "negative_sample_shape_layer_output": (lambda: _layer_output(LAYERS["ggm"][0](), 8).sample(-1), ValueError,
                                           r"sample_shape.*-1"),
    # x of the wrong width or batch in log_prob (a raw "Incompatible shapes" op error, or a silent broadcast).
    "log_prob_x_too_wide": (lambda: _ggm().log_prob(np.zeros(5, np.float32)), ValueError,
                            r"GaussianGraphicalModel: x must have shape \[\.\.\., 4\].*got shape \(5,\)"),
    "log_prob_x_of_width_1": (lambda: _ggm().log_prob(np.zeros(1, np.float32)), ValueError,
                              r"x must have shape \[\.\.\., 4\].*got shape \(1,\)"),
    "log_prob_batches_that_do_not_broadcast": (lambda: _ggm(batch=(3,)).log_prob(np.zeros((2, 4), np.float32)),
                                               ValueError, r"x of shape \(2, 4\).*batch shape \(3,\)"),
    "logit_normal_log_prob_x_too_wide": (lambda: _logit_normal().log_prob(np.full(5, 0.5, np.float32)), ValueError,
                                         r"MultivariateLogitNormal: x must have shape \[\.\.\., 4\].*\(5,\)"),
    "bijector_forward_x_too_wide": (lambda: PrecisionFactorSolve(np.ones((2, 4))).forward(np.zeros(5)), ValueError,
                                    r"PrecisionFactorSolve: x must have shape \[\.\.\., 4\].*\(5,\)"),
    "bijector_inverse_y_too_wide": (lambda: PrecisionFactorSolve(np.ones((2, 4))).inverse(np.zeros(5)), ValueError,
                                    r"PrecisionFactorSolve: y must have shape \[\.\.\., 4\].*\(5,\)"),
    "bijector_batches_that_do_not_broadcast": (
        lambda: PrecisionFactorSolve(np.ones((3, 2, 4))).forward(np.zeros((2, 4))), ValueError,
        r"x of shape \(2, 4\).*batch shape \(3,\)"),
    "ggm_layer_output_log_prob_x_too_wide": (
        lambda: _layer_output(LAYERS["ggm"][0](), 8).log_prob(tf.zeros([2, 4])), ValueError,
        r"x must have shape \[\.\.\., 3\].*\(2, 4\)"),
    "bernoulli_layer_output_log_prob_x_too_wide": (
        lambda: _layer_output(LAYERS["bernoulli"][0](), 3).log_prob(tf.zeros([2, 4])), ValueError,
        r"IndependentBernoulli: x must have shape \[\.\.\., 3\].*\(2, 4\)"),
    # Bad parameters of the distributions.
    "loc_and_bands_batches_that_do_not_broadcast": (
        lambda: GaussianGraphicalModel(np.zeros((3, 4)), np.ones((2, 2, 4))), ValueError,
        r"\(2, 2, 4\).*loc of shape \(3, 4\).*batch shape \(2,\)"),
    "rank_0_loc": (lambda: GaussianGraphicalModel(0.0, np.ones((1, 4))), ValueError,
                   r"loc must have shape \[\.\.\., 4\].*got shape \(\)"),
    "bands_without_rows": (lambda: GaussianGraphicalModel(np.zeros(4), np.ones((0, 4))), ValueError,
                           r"at least the diagonal row; got shape \(0, 4\)"),
    "n_is_0": (lambda: GaussianGraphicalModel(np.zeros(0), np.ones((1, 0))), ValueError,
               r"n >= 1.*got shape \(1, 0\)"),
    "non_integer_lags": (lambda: GaussianGraphicalModel(np.zeros(4), np.ones((2, 4)), lags=(0, 1.5)), ValueError,
                         r"lags must be 2 strictly increasing integers.*\(0, 1\.5\)"),
    "lags_not_a_sequence": (lambda: GaussianGraphicalModel(np.zeros(4), np.ones((2, 4)), lags=1), ValueError,
                            r"lags must be 2 strictly increasing integers.*got 1"),
    "logit_normal_alpha_out_of_range": (lambda: _logit_normal(alpha=-0.1), ValueError, r"alpha must be in \[0, 0\.5\)"),
    # Bad parameters and arguments of the layers and parameterizations.
    "int32_layer_params": (lambda: LAYERS["ggm"][0]()(tf.zeros([2, 8], tf.int32)), TypeError,
                           r"floating parameters; got dtype int32"),
    "rank_0_layer_params": (lambda: LAYERS["bernoulli"][0]()(tf.zeros([])), ValueError,
                            r"takes parameters \[\.\.\., 3\] \(params_size\); got shape \(\)"),
    "layer_stencil_not_a_stencil": (lambda: GaussianGraphicalModelLayer("chain"), TypeError,
                                    r"stencil must be a tfggm.stencils.Stencil.*'chain'"),
    "layer_negative_diagonal_floor": (lambda: GaussianGraphicalModelLayer(CHAIN, diagonal_floor=-1.0), ValueError,
                                      r"diagonal_floor must be finite and >= 0; got -1\.0"),
    "layer_alpha_out_of_range": (lambda: MultivariateLogitNormalLayer(CHAIN, alpha=0.7), ValueError,
                                 r"alpha must be in \[0, 0\.5\); got 0\.7"),
    "bernoulli_event_size_0": (lambda: IndependentBernoulliLayer(0), ValueError,
                               r"event_size must be a positive integer; got 0"),
    "parameterization_negative_floor": (
        lambda: parameterizations.factor_bands_from_values(CHAIN, np.zeros(5), diagonal_floor=-1.0), ValueError,
        r"diagonal_floor must be finite and >= 0"),
    "parameterization_int_values": (
        lambda: parameterizations.precision_bands_from_values(CHAIN, np.zeros(5, np.int32)), TypeError,
        r"values must be floating.*int32"),
}


@pytest.mark.parametrize("case", STATIC_CASES)
def test_static_problems_raise_at_once_naming_shapes_and_dtypes(case):
  call, error, message = STATIC_CASES[case]
  with pytest.raises(error, match=message):
    call()


@pytest.mark.parametrize("width", [10, 6])
@pytest.mark.parametrize("layer_name", LAYERS)
def test_layers_refuse_params_of_another_width_unknown_statically(layer_name, width):
  """Extra (or missing) values in params of static width None fail at run time, in a graph and under XLA."""
  make, expected = LAYERS[layer_name]
  width = width if layer_name != "bernoulli" else width - 5
  params = tf.zeros([2, width])
  x = tf.constant([0.2, 0.5, 0.7])

  def log_prob(p):
    return make()(p).log_prob(x)

  graph = tf.function(log_prob, input_signature=[tf.TensorSpec([None, None])])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf"takes parameters \[\.\.\., {expected}\] \(params_size\); got width\] \[{width}\]"):
    graph(params)
  xla = tf.function(log_prob, input_signature=[tf.TensorSpec([None, None])], jit_compile=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match=rf"\[2,{width}\].*expected shape \[\?,{expected}\]"):
    xla(params)
  right = tf.zeros([2, expected])
  np.testing.assert_allclose(graph(right), xla(right), rtol=1e-5)
  np.testing.assert_allclose(graph(right), make()(right).log_prob(x), rtol=1e-5)


def test_a_keras_input_of_unknown_width_refuses_extra_values():
  """A model on Input([None]): `predict` sees the data's static width, a tf.function over [None, None] does not."""
  x = tf_keras.Input([None])
  model = tf_keras.Model(x, IndependentBernoulliLayer(3)(x))
  params = np.zeros((2, 5), np.float32)
  with pytest.raises(ValueError, match=r"takes parameters \[\.\.\., 3\] \(params_size\); got shape \(None, 5\)"):
    model.predict(params, verbose=0)
  serve = tf.function(lambda p: tf.convert_to_tensor(model(p)), input_signature=[tf.TensorSpec([None, None])])
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"takes parameters \[\.\.\., 3\].*got width\] \[5\]"):
    serve(params)
  np.testing.assert_allclose(serve(params[:, :3]), np.full((2, 3), 0.5))


@pytest.mark.parametrize("layer_name", LAYERS)
def test_layers_with_validate_args_refuse_non_finite_params(layer_name):
  make, width = LAYERS[layer_name]
  params = np.zeros((2, width), np.float32)
  params[1, 0] = np.nan
  with pytest.raises(tf.errors.InvalidArgumentError, match="the parameters have NaN or Inf entries"):
    make(validate_args=True)(tf.constant(params))
  decoder = tf_keras.Sequential([tf_keras.layers.Dense(width), make(validate_args=True)])  # NaN z -> NaN logits
  with pytest.raises(tf.errors.InvalidArgumentError, match="the parameters have NaN or Inf entries"):
    decoder.predict(np.full((2, 4), np.nan, np.float32), verbose=0)
  # Without validate_args, NaN passes untouched.
  assert np.isnan(tf.convert_to_tensor(make()(tf.constant(params)))[1]).any()


BAD_BANDS = {
    "nan_off_diagonal": (1, 2, np.nan, "precision_factor_bands has NaN or Inf entries"),
    "inf_off_diagonal": (1, 3, np.inf, "precision_factor_bands has NaN or Inf entries"),
    "nan_diagonal": (0, 2, np.nan, "precision_factor_bands has NaN or Inf entries"),
    "zero_diagonal": (0, 1, 0.0, "diagonal of L .* must be positive"),
}
CHECKED = {
    "GaussianGraphicalModel": lambda bands, loc: GaussianGraphicalModel(loc, bands, validate_args=True).log_prob(loc),
    "MultivariateLogitNormal": lambda bands, loc: MultivariateLogitNormal(loc, bands, validate_args=True).log_prob(
        tf.sigmoid(loc)),
    "PrecisionFactorSolve": lambda bands, loc: PrecisionFactorSolve(bands, validate_args=True).forward(loc),
}


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("owner", CHECKED)
@pytest.mark.parametrize("bad", BAD_BANDS)
def test_validate_args_checks_every_band_entry(bad, owner, graph):
  row, column, value, message = BAD_BANDS[bad]
  bands = np.ones((2, 4))
  bands[row, column] = value
  run = tf.function(CHECKED[owner]) if graph else CHECKED[owner]
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    run(tf.constant(bands), tf.zeros(4, tf.float64))


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_validate_args_checks_loc(graph):
  loc = np.array([0.0, np.inf, 0.0, 0.0])
  run = tf.function(CHECKED["GaussianGraphicalModel"]) if graph else CHECKED["GaussianGraphicalModel"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="GaussianGraphicalModel: loc has NaN or Inf entries"):
    run(tf.ones((2, 4), tf.float64), tf.constant(loc))


def test_validate_args_checks_at_run_time_what_static_shapes_leave_open():
  """Widths and sample shapes unknown statically (tf.function with TensorSpec): checked under validate_args."""
  q = _ggm(validate_args=True)
  unknown = [tf.TensorSpec([None], tf.float32)]
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"GaussianGraphicalModel: x must have shape \[\.\.\., 4\]"):
    tf.function(q.log_prob, input_signature=unknown)(tf.zeros(5))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"MultivariateLogitNormal: x must have shape \[\.\.\., 4\]"):
    tf.function(_logit_normal(validate_args=True).log_prob, input_signature=unknown)(tf.fill([5], 0.5))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"PrecisionFactorSolve: x must have shape \[\.\.\., 4\]"):
    solve = PrecisionFactorSolve(np.ones((2, 4), np.float32), validate_args=True)
    tf.function(solve.forward, input_signature=unknown)(tf.zeros(5))
  with pytest.raises(tf.errors.InvalidArgumentError, match="sample_shape must have non-negative entries"):
    tf.function(lambda shape: q.sample(shape, seed=1), input_signature=[tf.TensorSpec([1], tf.int32)])([-1])
  np.testing.assert_allclose(tf.function(q.log_prob, input_signature=unknown)(tf.zeros(4)), q.log_prob(np.zeros(4)))


@pytest.mark.parametrize("checked", ["q", "p"])
def test_kl_checks_an_event_size_unknown_statically_under_either_validate_args(checked):
  q = _ggm(validate_args=checked == "q")

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def kl(loc):
    return tfd.kl_divergence(q, tfd.MultivariateNormalDiag(loc, validate_args=checked == "p"))

  message = r"KL\(GaussianGraphicalModel \|\| MultivariateNormalDiag\): loc must have shape \[\.\.\., 4\]"
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    kl(tf.zeros(1))
  np.testing.assert_allclose(kl(tf.zeros(4)), tfd.kl_divergence(q, tfd.MultivariateNormalDiag(tf.zeros(4))))
