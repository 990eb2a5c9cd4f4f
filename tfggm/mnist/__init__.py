"""The MNIST application on top of the tfggm library: data, configuration, training runs, export, the CLI.

`tfggm train | evaluate | export | sample` (`tfggm.mnist.cli`). Each module has one job:

| module | its job |
| --- | --- |
| `data` | MNIST IDX files, binarized and dequantized pipelines, the data-directory lookup |
| `config` | a run's configuration (`VAEConfig`), validated whole; posterior and likelihood names -> stencils |
| `networks` | the encoder, decoder and compiled `tfggm.VAE` of a configuration |
| `files` | files written whole or not at all; directories with one owner at a time (a lock) |
| `rundir` | the run directory: every file name in it, its configuration, history, summary, evaluation |
| `training` | `model.fit` with callbacks, resumable; tf.distribute (`distribute`) |
| `callbacks` | KL warm-up, epoch timing, TensorBoard images and histograms, tracked posterior, history, best weights |
| `evaluate` | a trained run's test ELBO, importance-sampled log p(x), active units |
| `export` | SavedModels for TF Serving |
| `cli` | the `tfggm` command |

The library (`tfggm`) never imports this package.
"""
