"""The `tfggm` command: train, evaluate, export, sample."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

__all__ = ["main"]

PROGRESS = {"bar": 1, "line": 2, "none": 0}  # --progress -> Keras' `verbose`


def _positive(text: str) -> int:
  """argparse type: an integer >= 1 (a bad value is a usage error, exit 2)."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
  return value


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows each option's default, except None (the help then says what happens without the option)."""

  def _get_help_string(self, action: argparse.Action) -> str:
    return action.help if action.default is None else super()._get_help_string(action)


def _config_arguments(parser: argparse.ArgumentParser) -> None:
  from tfggm.mnist.config import LIKELIHOODS, POSTERIORS, VAEConfig
  defaults = VAEConfig()
  parser.add_argument("--posterior", default=defaults.posterior, help=f"one of {', '.join(POSTERIORS)}")
  parser.add_argument("--likelihood", default=defaults.likelihood, choices=LIKELIHOODS,
                      help="p(x|z): Bernoulli pixels (binarized data) or a logit-normal over the pixel grid "
                           "(dequantized data)")
  parser.add_argument("--latent-dim", type=_positive, default=defaults.latent_dim, help="latent units n")
  parser.add_argument("--hidden-units", type=int, nargs="+", default=list(defaults.hidden_units),
                      help="Dense layers of the encoder (and, mirrored, the decoder)")
  parser.add_argument("--activation", default=defaults.activation, help="of the hidden layers (a Keras name)")
  parser.add_argument("--objective", choices=["elbo", "iwae"], default=defaults.objective,
                      help="the bound trained: the ELBO or the importance-weighted bound")
  parser.add_argument("--num-samples", type=_positive, default=defaults.num_samples,
                      help="z samples per data point (k of IWAE)")
  parser.add_argument("--monte-carlo-kl", action="store_true", help="Monte Carlo KL instead of the exact KL")
  parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs,
                      help="KL weight 0 -> 1 over these epochs (0: off)")
  parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="Adam's")
  parser.add_argument("--clip-global-norm", type=float, default=defaults.clip_global_norm,
                      help="gradient clipping by global norm (0: off)")
  parser.add_argument("--batch-size", type=_positive, default=defaults.batch_size,
                      help="images per step (the global batch under --strategy)")
  parser.add_argument("--epochs", type=_positive, default=defaults.epochs, help="training epochs")
  parser.add_argument("--alpha", type=float, default=defaults.alpha,
                      help="logit-normal likelihoods: pixels squashed into (alpha, 1 - alpha)")
  parser.add_argument("--seed", type=int, default=defaults.seed,
                      help="weights, shuffling, binarization and posterior noise")
  parser.add_argument("--max-examples", type=_positive, default=None,
                      help="use only this many images of each split (quick runs)")
  parser.add_argument("--jit-compile", action="store_true",
                      help="XLA-compile the whole training step (faster; in-graph pixel checks are then skipped)")
  parser.add_argument("--steps-per-execution", type=_positive, default=defaults.steps_per_execution,
                      help="training steps per call of the step function: the same updates, fewer per-batch "
                           "callback calls (faster for small models)")


def _config_from(args):
  from tfggm.mnist.config import VAEConfig
  return VAEConfig(
      posterior=args.posterior, likelihood=args.likelihood, latent_dim=args.latent_dim,
      hidden_units=tuple(args.hidden_units), activation=args.activation, objective=args.objective,
      num_samples=args.num_samples, analytic_kl=not args.monte_carlo_kl, warmup_epochs=args.warmup_epochs,
      learning_rate=args.learning_rate, clip_global_norm=args.clip_global_norm or None,
      batch_size=args.batch_size, epochs=args.epochs, alpha=args.alpha, seed=args.seed,
      max_examples=args.max_examples, jit_compile=args.jit_compile, steps_per_execution=args.steps_per_execution)


def _train(args) -> None:
  from tfggm.mnist.distribute import make_strategy
  strategy = make_strategy(args.strategy)  # first: a multi-worker strategy must precede every other TF op
  from tfggm.mnist.rundir import RunDirectory
  from tfggm.mnist.training import train
  logs = RunDirectory(args.run_dir).logs
  print(f"TensorBoard logs: {logs}  (view with: tensorboard --logdir {logs})", flush=True)
  summary = train(_config_from(args), args.run_dir, data_dir=args.data_dir, verbose=PROGRESS[args.progress],
                  strategy=strategy)
  print(f"best validation ELBO: {summary['best_val_elbo']:.2f} nats (epoch {summary['best_epoch']} of "
        f"{summary['epochs_run']}); {summary['median_epoch_seconds']:.1f} s per epoch (median)")


def _evaluate(args) -> None:
  from tfggm.mnist.evaluate import evaluate_run
  report = evaluate_run(args.run_dir, num_samples=args.num_samples, chunk_size=args.chunk_size,
                        max_test=args.max_test, data_dir=args.data_dir, weights=args.weights)
  print(json.dumps(report, indent=2))


def _export(args) -> None:
  from tfggm.mnist.evaluate import load_run
  from tfggm.mnist.export import export_model
  _, model = load_run(args.run_dir, weights=args.weights)
  print(f"exported to {export_model(model, args.to)}")


def _sample(args) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import tensorflow as tf

  from tfggm.mnist.data import IMAGE_SHAPE
  from tfggm.mnist.evaluate import load_run
  from tfggm.mnist.images import draw_images
  from tfggm.mnist.rundir import RunDirectory
  _, model = load_run(args.run_dir, weights=args.weights)
  z = tf.random.stateless_normal([args.num, model.latent_dim], seed=[args.seed, 0])
  images = draw_images(model.decoder, z, args.draw, seed=[args.seed, 1]).numpy().reshape(-1, *IMAGE_SHAPE)
  columns = int(min(args.num, 8))
  rows = -(-args.num // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(columns, rows), squeeze=False)
  for axis, index in zip(axes.ravel(), range(rows * columns)):
    axis.axis("off")
    if index < len(images):
      axis.imshow(images[index], cmap="gray", vmin=0, vmax=1)
  out = pathlib.Path(args.out or RunDirectory(args.run_dir).samples)
  figure.savefig(out, dpi=80, bbox_inches="tight")
  print(f"wrote {args.num} samples to {out}")


def build_parser() -> argparse.ArgumentParser:
  from tfggm import __version__
  from tfggm.mnist.distribute import STRATEGIES
  from tfggm.mnist.images import DRAWS
  from tfggm.mnist.rundir import WEIGHTS
  formatter = _DefaultsFormatter
  weights_help = "the best epoch's weights, or the last epoch's"
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                      help="show TensorFlow's own log lines and warnings (hidden by default)")
  parser = argparse.ArgumentParser(prog="tfggm", formatter_class=formatter, parents=[common],
                                   description="VAEs with Gaussian-graphical-model posteriors on MNIST.")
  parser.add_argument("--version", action="version", version=f"tfggm {__version__}")
  commands = parser.add_subparsers(dest="command", required=True)
  data_help = ("directory with the four MNIST IDX .gz files, e.g. data/mnist in a clone of the repository "
               "(default: $TFGGM_DATA_DIR, else tensorflow_datasets, which downloads MNIST when online)")

  def add_command(name: str, help: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, formatter_class=formatter, parents=[common], help=help)

  train = add_command("train", help="train (or resume) a VAE in RUN_DIR")
  train.add_argument("run_dir")
  train.add_argument("--data-dir", default=None, help=data_help)
  train.add_argument("--progress", choices=sorted(PROGRESS), default="bar",
                     help="Keras progress: a bar, a line per epoch, or none")
  train.add_argument("--strategy", choices=STRATEGIES, default="default",
                     help="tf.distribute: one device; this machine's GPUs (mirrored); or the workers of the "
                          "cluster in $TF_CONFIG (multi-worker). --batch-size is the global batch")
  _config_arguments(train)
  train.set_defaults(handler=_train)

  evaluate = add_command("evaluate", help="test ELBO and importance-sampled log p(x) of a run")
  evaluate.add_argument("run_dir")
  evaluate.add_argument("--num-samples", type=_positive, default=5000,
                        help="K of the importance-sampled estimate")
  evaluate.add_argument("--chunk-size", type=_positive, default=500, help="samples per chunk (bounds memory)")
  evaluate.add_argument("--max-test", type=_positive, default=None, help="evaluate on the first N test images")
  evaluate.add_argument("--weights", default=WEIGHTS[0], choices=WEIGHTS, help=weights_help)
  evaluate.add_argument("--data-dir", default=None, help=data_help)
  evaluate.set_defaults(handler=_evaluate)

  export = add_command("export", help="export a run as a SavedModel: TO/<next integer version>/")
  export.add_argument("run_dir")
  export.add_argument("--to", required=True, help="base folder, e.g. saved_models/mnist-chain")
  export.add_argument("--weights", default=WEIGHTS[0], choices=WEIGHTS, help=weights_help)
  export.set_defaults(handler=_export)

  sample = add_command("sample", help="draw images from a run as a PNG grid")
  sample.add_argument("run_dir")
  sample.add_argument("--num", type=_positive, default=64, help="images drawn")
  sample.add_argument("--seed", type=int, default=0, help="of z and of the draws")
  sample.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/samples.png)")
  sample.add_argument("--weights", default=WEIGHTS[0], choices=WEIGHTS, help=weights_help)
  sample.add_argument("--draw", default="mean", choices=DRAWS,
                      help="mean: p(x|z)'s mean image (logit-normal: its median); sample: x ~ p(x|z)")
  sample.set_defaults(handler=_sample)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs a subcommand; user errors print one line and exit 2, without a traceback.

  Unless --verbose, TensorFlow's Python warnings (e.g. Keras' slow-callback notes) are hidden; its C++ log lines
  are hidden by the `tfggm` command's launcher (`tfggm_cli`), which must act before TensorFlow is imported.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  args = build_parser().parse_args(argv)
  if not getattr(args, "verbose", False):
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
  from tfggm.mnist.config import ConfigError
  from tfggm.mnist.data import DataError
  from tfggm.mnist.training import TrainingDiverged
  try:
    args.handler(args)
  except (ConfigError, DataError, OSError) as error:
    print(f"tfggm {args.command}: error: {error}", file=sys.stderr)
    return 2
  except TrainingDiverged as error:
    print(f"tfggm {args.command}: {error}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"tfggm {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
