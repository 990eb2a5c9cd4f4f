"""Stencil presets, the general offsets constructor, and the values <-> bands maps."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import dense_lower
from tfggm import stencils


def _dense_pattern(height, width, neighbours):
  """Which L[i, j] are free, from grid geometry: node (r, c) -> (r + dr, c + dc)."""
  n = height * width
  pattern = np.eye(n, dtype=bool)
  for r in range(height):
    for c in range(width):
      for dr, dc in neighbours:
        rr, cc = r + dr, c + dc
        if 0 <= rr < height and 0 <= cc < width:
          pattern[r * width + c, rr * width + cc] = True
  return pattern


@pytest.mark.parametrize("height,width", [(1, 5), (3, 4), (4, 4), (5, 2), (4, 1), (1, 1)])
@pytest.mark.parametrize("name,neighbours", [
    ("grid", [(0, -1), (-1, 0)]),
    ("extended_grid", [(0, -1), (-1, -1), (-1, 0), (-1, 1)]),
])
def test_grid_presets_match_geometry(name, neighbours, height, width):
  stencil = getattr(stencils, name)(height, width)
  pattern = dense_lower(stencil.mask.astype(float)) != 0
  np.testing.assert_array_equal(pattern, _dense_pattern(height, width, neighbours))


@pytest.mark.parametrize("name", ["grid", "extended_grid"])
def test_grids_one_node_wide_or_high_are_chains(name):
  """Width 1: the upper neighbour is at lag 1; height 1: the left one is. Both are chain(n)."""
  preset = getattr(stencils, name)
  assert preset(5, 1) == stencils.chain(5) and preset(1, 5) == stencils.chain(5)
  assert preset(1, 1) == stencils.diagonal(1)
  assert stencils.from_config(preset(5, 1).get_config()) == stencils.chain(5)


@pytest.mark.parametrize("call,message", [
    (lambda: stencils.grid(0, 3), r"positive sizes; got \(0, 3\)"),
    (lambda: stencils.grid(3, -1), r"positive sizes; got \(3, -1\)"),
    (lambda: stencils.extended_grid(2, 0), r"positive sizes; got \(2, 0\)"),
    (lambda: stencils.grid(2.5, 3), r"of integers.*got \(2\.5, 3\)"),
    (lambda: stencils.chain(0), r"positive sizes; got 0"),
    (lambda: stencils.band(4, 1.5), r"bandwidth must be an integer >= 0; got 1\.5"),
    (lambda: stencils.Stencil(np.zeros((0, 3), bool)), r"b \+ 1 >= 1 and n >= 1; got shape \(0, 3\)"),
])
def test_bad_sizes_raise_naming_them(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_one_dimensional_presets():
  assert stencils.diagonal(5).num_params == 5 and stencils.diagonal(5).bandwidth == 0
  chain = stencils.chain(5)
  assert chain.bandwidth == 1 and chain.num_params == 9
  band = stencils.band(6, 3)
  assert band.bandwidth == 3 and band.num_params == 6 + 5 + 4 + 3
  assert stencils.band(4, 10).bandwidth == 3  # lags beyond n are unused
  assert stencils.extended_grid(4, 4).lags == (1, 3, 4, 5)
  assert stencils.grid(28, 28).num_params == 784 + 2 * 28 * 27


def test_values_bands_round_trip(stencil):
  rng = np.random.default_rng(0)
  values = rng.normal(size=(2, 3, stencil.num_params))
  bands = stencil.bands_from_values(values).numpy()
  assert bands.shape == (2, 3, stencil.bandwidth + 1, stencil.n)
  np.testing.assert_array_equal(bands[..., ~stencil.mask], 0.0)
  np.testing.assert_array_equal(bands[..., 0, :], values[..., : stencil.n])
  np.testing.assert_array_equal(stencil.values_from_bands(bands).numpy(), values)


def test_bands_from_values_gradient_is_the_transposed_gather(stencil):
  values = tf.Variable(np.ones((stencil.num_params,)))
  weights = np.arange((stencil.bandwidth + 1) * stencil.n, dtype=float).reshape(stencil.mask.shape)
  with tf.GradientTape() as tape:
    total = tf.reduce_sum(stencil.bands_from_values(values) * weights)
  np.testing.assert_array_equal(tape.gradient(total, values).numpy(), weights[stencil.mask])


@pytest.mark.parametrize("shape,offsets,message", [
    ((3, 3), [(0, 1)], "strictly in the past"),
    ((3, 3), [(1, -1)], "strictly in the past"),
    (5, [1], "strictly in the past"),
    ((3, 3), [(-1, 3)], "whole row"),
    ((3, 3), [-1], "offsets \\(dr, dc\\)"),
    ((0, 3), [], "positive sizes"),
    (5, [-1.5], r"offsets -k made of integers.*got -1\.5"),  # was silently lag 1
    (5, [-1.0], r"offsets -k made of integers.*got -1\.0"),
    (5, [np.nan], r"offsets -k made of integers.*got nan"),
    (5, [True], r"offsets -k made of integers.*got True"),
    (5, ["-1"], r"offsets -k made of integers.*got '-1'"),
    (5, [0], r"Offset 0 is not strictly in the past"),
    (5, [(0, -1)], r"1-D stencil takes offsets -k.*got \(0, -1\)"),
    (5, -1, r"offsets must be a sequence of offsets; got -1"),
    ((3, 3), [(-0.5, 0)], r"offsets \(dr, dc\) made of integers.*got \(-0\.5, 0\)"),
    ((3, 3), [(0, 0, -1)], r"offsets \(dr, dc\).*got \(0, 0, -1\)"),
    ((3, 3), [(0, 0)], r"Offset \(0, 0\) is not strictly in the past"),
    ((3, 3, 3), [], r"n, \(n,\) or \(h, w\).*got \(3, 3, 3\)"),
    (5.5, [], r"of integers.*got 5\.5"),
])
def test_bad_offsets_raise(shape, offsets, message):
  with pytest.raises(ValueError, match=message):
    stencils.from_offsets(shape, offsets)


def test_wrong_number_of_values_names_the_shapes():
  with pytest.raises(ValueError, match=r"17 free values; got values of shape \(2, 16\)"):
    stencils.chain(9).bands_from_values(np.zeros((2, 16)))
  unknown = tf.function(stencils.chain(3).bands_from_values, input_signature=[tf.TensorSpec([None, None])])
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[2,7\] is not compatible with expected shape \[\?,5\]"):
    unknown(tf.zeros([2, 7]))  # extra values were silently dropped
  np.testing.assert_array_equal(unknown(tf.ones([2, 5]))[:, 0], 1.0)


def test_bands_with_the_wrong_number_of_rows_name_the_shapes():
  with pytest.raises(ValueError, match=r"\[\.\.\., 6, 16\].*got \(3, 4, 16\)"):
    stencils.extended_grid(4, 4).values_from_bands(np.zeros((3, 4, 16)))


def test_active_lags_select_the_rows_that_can_be_non_zero(stencil):
  values = np.random.default_rng(3).normal(size=(2, stencil.num_params))
  full = stencil.bands_from_values(values).numpy()
  lags = stencil.active_lags
  assert lags[0] == 0 and all(stencil.mask[k].any() for k in lags)
  np.testing.assert_array_equal(np.delete(full, list(lags), axis=-2), 0.0)
  np.testing.assert_array_equal(stencil.bands_from_values(values, active_lags_only=True), full[..., list(lags), :])


def test_stencil_config_round_trip(stencil):
  rebuilt = stencils.from_config(stencil.get_config())
  assert rebuilt == stencil and rebuilt.name == stencil.name
  custom = stencils.Stencil(stencil.mask, name="from_mask")
  assert stencils.from_config(custom.get_config()) == stencil
