"""The public surface and the layering: what `import tfggm` exposes and loads, and files saved by older layouts."""

import ast
import json
import pathlib
import subprocess
import sys

import numpy as np
import tf_keras

import tfggm

PACKAGE = pathlib.Path(tfggm.__file__).resolve().parent
DATA = pathlib.Path(__file__).resolve().parent / "data"


def test_the_public_api_is_small():
  assert sorted(tfggm.__all__) == [
      "GaussianGraphicalModel", "GaussianGraphicalModelLayer", "HierarchicalVAE", "IndependentBernoulliLayer",
      "MultivariateLogitNormal",
      "MultivariateLogitNormalLayer", "PrecisionFactorSolve", "VAE", "linalg", "stencils"]
  assert sorted(tfggm.linalg.__all__) == [
      "bands_at_every_lag", "bands_from_dense", "cholesky", "dense_from_bands", "marginal_variances", "matvec",
      "matvec_transpose", "plain_graph_kernels", "product_with_transpose", "selected_inversion", "solve",
      "solve_vec"]
  for module in (tfggm, tfggm.linalg, tfggm.stencils, tfggm.distributions, tfggm.models):
    for name in module.__all__:
      assert getattr(module, name) is not None, (module.__name__, name)


def test_import_tfggm_loads_the_library_only():
  """In a fresh process: `import tfggm` loads no module of the application, nor its data stack.

  (matplotlib is not checked: TensorFlow itself imports it.)
  """
  code = ("import json, sys, tfggm; print(json.dumps(sorted(m for m in sys.modules "
          "if m.startswith(('tfggm', 'tensorflow_datasets', 'experiments')))))")
  loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout.strip().splitlines()[-1])
  assert "tfggm.linalg" in loaded and "tfggm.models" in loaded  # the check sees the library's modules
  assert not [m for m in loaded if m.startswith(("tfggm.mnist", "tensorflow_datasets", "experiments"))]


def _imported_modules(path: pathlib.Path) -> set[str]:
  tree = ast.parse(path.read_text())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
  return names


def test_the_library_never_imports_the_application():
  """No module of the library names `tfggm.mnist`, even lazily inside a function (only `python -m tfggm` does)."""
  library = [p for p in PACKAGE.rglob("*.py") if "mnist" not in p.relative_to(PACKAGE).parts
             and p.name != "__main__.py"]
  assert len(library) > 15
  offenders = {str(p.relative_to(PACKAGE)): sorted(m for m in _imported_modules(p) if m.startswith("tfggm.mnist"))
               for p in library}
  assert not {k: v for k, v in offenders.items() if v}


def test_models_saved_with_the_old_layout_still_load():
  """.keras files written when the VAE and layers lived in other modules load, with the same outputs.

  Same up to float32 rounding: the outputs were stored on another CPU, whose matmul kernels sum in another order
  (3e-7 apart here on an entry of 0.05); weights not restored would be off by O(1).
  """
  expected = np.load(DATA / "saved_before_the_move_outputs.npz")
  close = dict(rtol=1e-5, atol=1e-6)
  vae = tf_keras.models.load_model(DATA / "vae_saved_before_the_move.keras")
  assert isinstance(vae, tfggm.VAE)
  assert isinstance(vae.encoder.layers[-1], tfggm.GaussianGraphicalModelLayer)
  np.testing.assert_allclose(vae.encoder(expected["images"]).mean(), expected["posterior_mean"], **close)
  np.testing.assert_allclose(vae.decoder(expected["z"]).mean(), expected["decoder_mean"], **close)
  logit_normal = tf_keras.models.load_model(DATA / "logit_normal_saved_before_the_move.keras")
  assert isinstance(logit_normal.layers[-1], tfggm.MultivariateLogitNormalLayer)
  np.testing.assert_allclose(logit_normal(expected["u"]).loc, expected["logit_normal_loc"], **close)
