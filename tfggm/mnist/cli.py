"""The `tfggm` command: train, evaluate, export, sample."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys

__all__ = ["main"]

PROGRESS = {"bar": 1, "line": 2, "none": 0}  # --progress -> Keras' `verbose`
MAX_SAMPLES = 1024  # `tfggm sample --num`: a grid of more images is no longer a figure one can look at
# VAEConfig fields whose flag is not "--" + field with dashes
FLAGS = {"analytic_kl": "--monte-carlo-kl", "upper_layers": "--upper-layer"}
UPPER_LAYER_FORM = "LATENT_DIM:HIDDEN[,HIDDEN...]:POSTERIOR[:PRIOR]"  # --upper-layer, e.g. 50:100,100:band4


def _positive(text: str) -> int:
  """argparse type: an integer >= 1 (a bad value is a usage error, exit 2)."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
  return value


def _seed(text: str) -> int:
  """argparse type: an integer in [0, MAX_SEED], the seeds every consumer takes (`tfggm.mnist.config`)."""
  from tfggm.mnist.config import MAX_SEED
  value = int(text)
  if not 0 <= value <= MAX_SEED:
    raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}]; got {value}")
  return value


def _sample_count(text: str) -> int:
  """argparse type: an integer in [1, MAX_SAMPLES]."""
  value = _positive(text)
  if value > MAX_SAMPLES:
    raise argparse.ArgumentTypeError(f"at most {MAX_SAMPLES} images fit one figure; got {value}")
  return value


def _upper_layer(text: str):
  """argparse type: a StochasticLayer from LATENT_DIM:HIDDEN[,HIDDEN...]:POSTERIOR[:PRIOR] (HIDDEN may be empty:
  no hidden layer; PRIOR defaults to standard). The values are checked by VAEConfig, the form here."""
  from tfggm.mnist.config import StochasticLayer
  expected = f"expected {UPPER_LAYER_FORM}, e.g. 50:100,100:band4 or 50::diagonal"
  match = re.fullmatch(r"([0-9]+):([0-9]+(?:,[0-9]+)*)?:([^:]+)(?::([^:]+))?", text)
  if not match:
    raise argparse.ArgumentTypeError(f"{expected}; got {text!r}")
  latent_dim, hidden, posterior, prior = match.groups()
  try:
    hidden_units = tuple(int(units) for units in hidden.split(",")) if hidden else ()
    return StochasticLayer(int(latent_dim), hidden_units, posterior, prior or "standard")
  except ValueError as error:  # int() reads at most 4,300 digits
    raise argparse.ArgumentTypeError(f"{expected}; got a number too long to read") from error


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows each option's default, except None (the help then says what happens without the option)."""

  def _get_help_string(self, action: argparse.Action) -> str:
    return action.help if action.default is None else super()._get_help_string(action)


def _config_arguments(parser: argparse.ArgumentParser) -> None:
  from tfggm.mnist.config import LEARNING_RATE_SCHEDULES, LIKELIHOODS, POSTERIORS, VAEConfig
  defaults = VAEConfig()
  parser.add_argument("--posterior", default=defaults.posterior,
                      help=f"q(z1|x): one of {', '.join(POSTERIORS)}")
  parser.add_argument("--prior", default=defaults.prior,
                      help="p(z1): standard, N(0, I), when z1 is the top layer; with --upper-layer, the structure of "
                           "the conditional p(z1|z2), a --posterior name such as diagonal or band4")
  parser.add_argument("--likelihood", default=defaults.likelihood, choices=LIKELIHOODS,
                      help="p(x|z): Bernoulli pixels (binarized data) or a logit-normal over the pixel grid "
                           "(dequantized data)")
  parser.add_argument("--output-bias-from-data", action="store_true",
                      help="Bernoulli likelihood: start the decoder's output bias at the logit of the training "
                           "pixel means (the IWAE paper's initialization)")
  parser.add_argument("--zero-init-gaussians", action="store_true",
                      help="start the Dense layer of every posterior's and conditional prior's parameters at zero "
                           "weights: each Gaussian starts isotropic, whatever its input (a band of L with random "
                           "entries can make L^-1, so the covariance, grow exponentially along the band)")
  parser.add_argument("--latent-dim", type=_positive, default=defaults.latent_dim, help="latent units n of z1")
  parser.add_argument("--hidden-units", type=int, nargs="+", default=list(defaults.hidden_units),
                      help="Dense layers of the encoder (and, mirrored, the decoder) between x and z1")
  parser.add_argument("--upper-layer", type=_upper_layer, action="append", default=None, metavar="SPEC",
                      help=f"a stochastic layer above the last, bottom to top (repeat for more): SPEC = "
                           f"{UPPER_LAYER_FORM}, its latent units, the hidden widths of the "
                           "networks to and from the layer below (none: 50::diagonal), its posterior, and its "
                           "prior (standard for the top layer, the default; else a structure), e.g. "
                           "50:100,100:band4")
  parser.add_argument("--activation", default=defaults.activation, help="of the hidden layers (a Keras name)")
  parser.add_argument("--objective", choices=["elbo", "iwae"], default=defaults.objective,
                      help="the bound trained: the ELBO or the importance-weighted bound")
  parser.add_argument("--num-samples", type=_positive, default=defaults.num_samples,
                      help="z samples per data point (k of IWAE)")
  parser.add_argument("--monte-carlo-kl", action="store_true", help="Monte Carlo KL instead of the exact KL")
  parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs,
                      help="KL weight 0 -> 1 over these epochs (0: off)")
  parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="Adam's")
  parser.add_argument("--learning-rate-schedule", choices=LEARNING_RATE_SCHEDULES,
                      default=defaults.learning_rate_schedule,
                      help="iwae: the IWAE paper's 8 stages, --learning-rate * 10**(-i/7) for 3**i of 3,280 "
                           "epochs, compressed into --epochs")
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
  """The VAEConfig of the flags; a bad value is a ConfigError naming its flag."""
  from tfggm.mnist.config import ConfigError, VAEConfig
  try:
    return VAEConfig(
        posterior=args.posterior, prior=args.prior, likelihood=args.likelihood,
        output_bias_from_data=args.output_bias_from_data, zero_init_gaussians=args.zero_init_gaussians,
        latent_dim=args.latent_dim,
        hidden_units=tuple(args.hidden_units), activation=args.activation, upper_layers=tuple(args.upper_layer or ()),
        objective=args.objective, num_samples=args.num_samples, analytic_kl=not args.monte_carlo_kl,
        warmup_epochs=args.warmup_epochs, learning_rate=args.learning_rate,
        learning_rate_schedule=args.learning_rate_schedule, clip_global_norm=args.clip_global_norm or None,
        batch_size=args.batch_size, epochs=args.epochs, alpha=args.alpha, seed=args.seed,
        max_examples=args.max_examples, jit_compile=args.jit_compile, steps_per_execution=args.steps_per_execution)
  except ConfigError as error:
    if error.field is None:
      raise
    raise ConfigError(f"argument {FLAGS.get(error.field, '--' + error.field.replace('_', '-'))}: {error}") from None


def _train(args) -> None:
  from tfggm.mnist.distribute import make_strategy
  strategy = make_strategy(args.strategy)  # first: a multi-worker strategy must precede every other TF op
  from tfggm.mnist.rundir import RunDirectory
  from tfggm.mnist.training import train
  config = _config_from(args)
  logs = RunDirectory(args.run_dir).logs
  print(f"TensorBoard logs: {logs}  (view with: tensorboard --logdir {logs})", flush=True)
  summary = train(config, args.run_dir, data_dir=args.data_dir, verbose=PROGRESS[args.progress],
                  strategy=strategy, allow_nonstandard_counts=args.allow_nonstandard_counts)
  print(f"best validation ELBO: {summary['best_val_elbo']:.2f} nats (epoch {summary['best_epoch']} of "
        f"{summary['epochs_run']}); {summary['median_epoch_seconds']:.1f} s per epoch (median)")


def _evaluate(args) -> None:
  from tfggm.mnist.evaluate import evaluate_run
  report = evaluate_run(args.run_dir, num_samples=args.num_samples, chunk_size=args.chunk_size,
                        max_test=args.max_test, data_dir=args.data_dir, weights=args.weights,
                        allow_nonstandard_counts=args.allow_nonstandard_counts)
  print(json.dumps(report, indent=2))


def _export(args) -> None:
  from tfggm.mnist.evaluate import load_run
  from tfggm.mnist.export import export_model
  _, model = load_run(args.run_dir, weights=args.weights)
  print(f"exported to {export_model(model, args.to)}")


def _sample(args) -> None:
  import contextlib

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.backend_bases import FigureCanvasBase

  from tfggm.mnist import files
  from tfggm.mnist.data import IMAGE_SHAPE
  from tfggm.mnist.evaluate import load_run
  from tfggm.mnist.images import draw_images
  from tfggm.mnist.rundir import RunDirectory
  run = RunDirectory(args.run_dir)
  out = _figure_path(args.out, run.samples, FigureCanvasBase.get_supported_filetypes())
  _, model = load_run(run.path, weights=args.weights)
  z = model.sample_first_latents(args.num, [args.seed, 0])
  images = draw_images(model.decoder, z, args.draw, seed=[args.seed, 1]).numpy().reshape(-1, *IMAGE_SHAPE)
  columns = int(min(args.num, 8))
  rows = -(-args.num // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(columns, rows), squeeze=False)
  for axis, index in zip(axes.ravel(), range(rows * columns)):
    axis.axis("off")
    if index < len(images):
      axis.imshow(images[index], cmap="gray", vmin=0, vmax=1)
  inside_run = out.resolve().parent == run.path.resolve()
  with run.owned() if inside_run else contextlib.nullcontext(), files.replacing(out) as temporary:
    figure.savefig(temporary, dpi=80, bbox_inches="tight", format=out.suffix[1:])
  print(f"wrote {args.num} samples to {out}")


def _figure_path(out: str | None, default: pathlib.Path, formats: dict[str, str]) -> pathlib.Path:
  """Where `sample` writes: `out` (".png" added when it has no suffix) or `default`; checked before any work."""
  from tfggm.mnist.config import ConfigError
  path = pathlib.Path(out) if out else default
  if not path.suffix:
    path = path.with_suffix(".png")
  if path.suffix[1:].lower() not in formats:
    raise ConfigError(f"argument --out: cannot write a '{path.suffix}' image; use one of "
                      f"{', '.join('.' + f for f in sorted(formats))}.")
  if not path.parent.is_dir():
    raise ConfigError(f"argument --out: {path.parent} is not a directory.")
  return path


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
  counts_help = "accept MNIST files with other numbers of images than 60,000 (train) and 10,000 (test)"

  def add_command(name: str, help: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, formatter_class=formatter, parents=[common], help=help)

  train = add_command("train", help="train (or resume) a VAE in RUN_DIR")
  train.add_argument("run_dir")
  train.add_argument("--data-dir", default=None, help=data_help)
  train.add_argument("--allow-nonstandard-counts", action="store_true", help=counts_help)
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
  evaluate.add_argument("--allow-nonstandard-counts", action="store_true", help=counts_help)
  evaluate.set_defaults(handler=_evaluate)

  export = add_command("export", help="export a run as a SavedModel: TO/<next integer version>/")
  export.add_argument("run_dir")
  export.add_argument("--to", required=True, help="base folder, e.g. saved_models/mnist-chain")
  export.add_argument("--weights", default=WEIGHTS[0], choices=WEIGHTS, help=weights_help)
  export.set_defaults(handler=_export)

  sample = add_command("sample", help="draw images from a run as a PNG grid")
  sample.add_argument("run_dir")
  sample.add_argument("--num", type=_sample_count, default=64, help=f"images drawn (at most {MAX_SAMPLES})")
  sample.add_argument("--seed", type=_seed, default=0, help="of z and of the draws")
  sample.add_argument("--out", default=None,
                      help="image path; its suffix is the format (.png if none) (default: RUN_DIR/samples.png)")
  sample.add_argument("--weights", default=WEIGHTS[0], choices=WEIGHTS, help=weights_help)
  sample.add_argument("--draw", default="mean", choices=DRAWS,
                      help="mean: p(x|z)'s mean image (logit-normal: its median); sample: x ~ p(x|z)")
  sample.set_defaults(handler=_sample)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs a subcommand; user errors print one line and exit 2, without a traceback.

  User errors: a bad flag or configuration, bad data, a run directory in use or whose files cannot be
  used, and what the file system refuses (a full disk, a permission, a missing file). Unless --verbose,
  TensorFlow's Python warnings (e.g. Keras' slow-callback notes) are hidden; its C++ log lines are
  hidden by the `tfggm` command's launcher (`tfggm_cli`), which must act before TensorFlow is imported.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  args = build_parser().parse_args(argv)
  import tensorflow as tf
  quiet = not getattr(args, "verbose", False)
  if quiet:
    tf.get_logger().setLevel("ERROR")
  from tfggm.mnist.config import ConfigError
  from tfggm.mnist.data import DataError
  from tfggm.mnist.files import DirectoryBusy
  from tfggm.mnist.rundir import RunDirectoryError
  from tfggm.mnist.training import TrainingDiverged
  unraisablehook = sys.unraisablehook
  if quiet:
    sys.unraisablehook = lambda unraisable: None  # e.g. h5py's reports while freeing a file a full disk cut
  try:
    args.handler(args)
  except (ConfigError, DataError, DirectoryBusy, RunDirectoryError, OSError, tf.errors.ResourceExhaustedError,
          tf.errors.PermissionDeniedError) as error:
    print(f"tfggm {args.command}: error: {_one_line(error)}", file=sys.stderr)
    return 2
  except TrainingDiverged as error:
    print(f"tfggm {args.command}: {error}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"tfggm {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
    return 130
  finally:
    sys.unraisablehook = unraisablehook
  return 0


def _one_line(error: Exception) -> str:
  """The message of a user error on one line, e.g. "No space left on device: PATH".

  An OSError gives its reason and file; HDF5's and TensorFlow's file errors are reduced to the same.
  """
  message = (getattr(error, "message", None) or str(error) or type(error).__name__).strip()
  hdf5 = re.search(r"filename = '([^']*)'.*error message = '([^']*)'", message, re.DOTALL)
  if hdf5:
    return f"{hdf5.group(2)}: {hdf5.group(1)}"
  if isinstance(error, OSError) and error.strerror:
    return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
  line = re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]$", "", message.splitlines()[0])
  tensorflow_file = re.fullmatch(r"(/\S+); (.+)", line)
  return f"{tensorflow_file.group(2)}: {tensorflow_file.group(1)}" if tensorflow_file else line


if __name__ == "__main__":
  sys.exit(main())
