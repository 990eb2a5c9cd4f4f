"""The benchmark's summary (the ratios), its markdown tables and its plot, rebuilt from the stored JSON.

OUT.json holds one section per subcommand of scripts/benchmark.py ("kernels", "peer", "vae_steps",
"memory_target") and the "summary" derived from them; `store` replaces one section and rebuilds the summary,
OUT.md and OUT.png from the whole file, each written whole (`tfggm.mnist.files`). Nothing here judges a
measurement against a target: the targets are in the README.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
from benchmark_registry import NAMES, Shape, shape_of

from tfggm.mnist import files


def _grouped(records: list[dict], key: Callable) -> dict:
  groups = {}
  for r in records:
    groups.setdefault(key(r), []).append(r)
  return groups


def _by_shape(records: list[dict], operation: str) -> dict:
  """shape -> implementation -> record, for one operation."""
  return {shape: {r["implementation"]: r for r in rows}
          for shape, rows in _grouped([r for r in records if r["operation"] == operation], shape_of).items()}


def peer_ratios(records: list[dict]) -> list[dict]:
  """time(banded_matrices) / time(tfggm) per operation and shape measured by both."""
  out = []
  for operation in dict.fromkeys(r["operation"] for r in records):
    for shape, by_name in sorted(_by_shape(records, operation).items(), key=lambda item: _peer_order(item[0])):
      if "banded_matrices" in by_name and "tfggm" in by_name:
        theirs, ours = by_name["banded_matrices"]["seconds"], by_name["tfggm"]["seconds"]
        out.append(dict(operation=operation, **shape._asdict(), banded_matrices_seconds=theirs, tfggm_seconds=ours,
                        ratio=theirs / ours))
  return out


def _peer_order(shape: Shape) -> tuple:
  """float64 first, then by batch, n and b."""
  return -np.dtype(shape.dtype).itemsize, shape.batch, shape.n, shape.b


def geometric_mean(values: Sequence[float]) -> float:
  return float(np.exp(np.mean(np.log(values))))


def slopes(records: list[dict], low: int = 784) -> list[dict]:
  """Least-squares log-log slope of our time against n >= `low`, per operation, dtype, b and batch (3+ sizes)."""
  ours = [r for r in records if r["implementation"] == "tfggm" and r["n"] >= low]
  out = []
  key = lambda r: (r["operation"], shape_of(r).dtype, r["b"], r["batch"])
  for (operation, dtype, b, batch), rows in _grouped(ours, key).items():
    if len({r["n"] for r in rows}) >= 3:
      n, t = np.log([r["n"] for r in rows]), np.log([r["seconds"] for r in rows])
      out.append(dict(operation=operation, dtype=dtype, b=b, batch=batch, slope=float(np.polyfit(n, t, 1)[0]),
                      n_range=[min(r["n"] for r in rows), max(r["n"] for r in rows)]))
  return sorted(out, key=lambda f: (f["operation"], f["dtype"], f["b"], f["batch"]))


def vae_ratios(records: list[dict]) -> list[dict]:
  """Each VAE step against the first row of its group (the diagonal posterior / likelihood), XLA and not.

  `paired_ratio`, the one to read: the median over rounds of this row's epoch over the first row's epoch of the
  same round (the rows of a group run interleaved, one epoch each per round), so that a drift of the machine's
  speed between rounds cancels. The ratios of the fastest and of the median epochs follow each row's own luck:
  at batch 32 one fast epoch of the first row moves every fastest ratio of its group by 20-30%.
  """
  out = []
  for (group, jit), rows in _grouped(records, lambda r: (r["group"], r["jit"])).items():
    first = rows[0]
    for r in rows[1:]:
      paired = [mine / theirs for mine, theirs in zip(r["epoch_seconds"], first["epoch_seconds"])]
      out.append(dict(group=group, posterior=r["posterior"], likelihood=r["likelihood"], jit=jit,
                      paired_ratio=float(np.median(paired)),
                      fastest_ratio=r["fastest_seconds"] / first["fastest_seconds"],
                      median_ratio=r["seconds"] / first["seconds"]))
  return out


def summary(data: dict) -> dict:
  """The ratios the issue asks for, from the stored sections (each one measured in a single run)."""
  kernel_records = data.get("kernels", {}).get("records", [])
  peer = peer_ratios(data.get("peer", {}).get("records", []))
  out = dict(peer_ratios=peer, slopes=slopes(kernel_records) + slopes(data.get("peer", {}).get("records", [])),
             vae_ratios=vae_ratios(data.get("vae_steps", {}).get("records", [])))
  if peer:
    out["peer_geometric_mean"] = dict(all=geometric_mean([r["ratio"] for r in peer]), **{
        operation: geometric_mean([r["ratio"] for r in rows])
        for operation, rows in _grouped(peer, lambda r: r["operation"]).items()})
  at_784 = _by_shape(kernel_records, "sample_log_prob_grad").get(Shape(784, 28, 128), {})
  if "tfggm" in at_784:
    ours = at_784["tfggm"]["seconds"]
    out["sample_log_prob_grad_784_28_128"] = {name: at_784[name]["seconds"] / ours for name in NAMES
                                              if name in at_784 and name not in ("tfggm", "memory_bound")}
  return out


def ratio_table(data: dict) -> str:
  ratios = data["summary"]
  lines = ["\n### Ratios (each from one run; times are medians)\n", "| quantity | measured |", "|---|---|"]
  peer = ratios["peer_ratios"]
  if peer:
    lowest = min(peer, key=lambda r: r["ratio"])
    lines.append(f"| banded-matrices / ours, geometric mean of {len(peer)} rows | "
                 f"{ratios['peer_geometric_mean']['all']:.2f}× (lowest: {lowest['ratio']:.2f}×, "
                 f"{lowest['operation']} at n, b, batch = {lowest['n']}, {lowest['b']}, {lowest['batch']}, "
                 f"{lowest['dtype']}) |")
    lines += [f"| banded-matrices / ours, geometric mean, {operation} | {value:.2f}× |"
              for operation, value in ratios["peer_geometric_mean"].items() if operation != "all"]
  for name, ratio in ratios.get("sample_log_prob_grad_784_28_128", {}).items():
    lines.append(f"| n = 784, b = 28, batch 128, sample + log_prob + gradient: {name} / ours | {ratio:.2f}× |")
  for fit in sorted(ratios["slopes"], key=lambda f: -f["slope"])[:1]:
    lines.append(f"| log-log slope of our time against n from n = 784 (every fit below) | steepest "
                 f"{fit['slope']:.2f}: {fit['operation']}, {fit['dtype']}, b = {fit['b']}, batch {fit['batch']} |")
  for r in ratios["vae_ratios"]:
    lines.append(f"| VAE step, {r['posterior']} posterior, {r['likelihood']} / the group's diagonal row, XLA "
                 f"{'yes' if r['jit'] else 'no'} | {r['paired_ratio']:.2f}× paired median (fastest epochs "
                 f"{r['fastest_ratio']:.2f}×, median epochs {r['median_ratio']:.2f}×) |")
  memory = data.get("memory_target")
  if memory:
    lines.append(f"| n, b, batch = {memory['n']}, {memory['b']}, {memory['batch']}: peak of sample + log_prob + "
                 f"gradient, first call in a fresh process (tracing and compilation included) | "
                 f"{memory['first_call_peak_bytes'] / 1e9:.2f} GB above the RSS with the inputs built |")
  return "\n".join(lines) + "\n"


def peer_table(rows: list[dict]) -> str:
  lines = ["\n### banded-matrices against ours (ratio above 1: ours is faster)\n",
           "| operation | dtype | n | b | batch | banded-matrices | tfggm | ratio |", "|---" * 8 + "|"]
  lines += [f"| {r['operation']} | {r['dtype']} | {r['n']} | {r['b']} | {r['batch']} | "
            f"{1e3 * r['banded_matrices_seconds']:.3g} ms | {1e3 * r['tfggm_seconds']:.3g} ms | {r['ratio']:.2f}× |"
            for r in rows]
  return "\n".join(lines) + "\n"


def kernel_tables(records: list[dict]) -> str:
  """One markdown table per operation: the time of each implementation and its ratio to ours."""
  names = [name for name in NAMES if any(r["implementation"] == name for r in records)]
  lines = []
  for operation in dict.fromkeys(r["operation"] for r in records):
    lines += [f"\n### {operation}\n", "| n | b | batch | " + " | ".join(names) + " | ours peak MB |",
              "|---" * (len(names) + 4) + "|"]
    for shape, by_name in sorted(_by_shape(records, operation).items()):
      ours = by_name.get("tfggm")
      cells = [_cell(by_name.get(name), None if name == "tfggm" else ours) for name in names]
      peak = f"{ours['peak_bytes'] / 1e6:.0f}" if ours else "—"
      lines.append(f"| {shape.n} | {shape.b} | {shape.batch} | " + " | ".join(cells) + f" | {peak} |")
  return "\n".join(lines) + "\n"


def _cell(record: dict | None, ours: dict | None) -> str:
  if record is None:
    return "—"
  ratio = f" ({record['seconds'] / ours['seconds']:.2g}×)" if ours else ""
  return f"{1e3 * record['seconds']:.3g} ms{ratio}"


def slope_table(fits: list[dict]) -> str:
  lines = ["\n### Log-log slope of our time against n (fixed b and batch; 1 = linear)\n",
           "| operation | dtype | b | batch | n range | slope |", "|---|---|---|---|---|---|"]
  lines += [f"| {f['operation']} | {f['dtype']} | {f['b']} | {f['batch']} | {f['n_range'][0]}–{f['n_range'][1]} | "
            f"{f['slope']:.2f} |" for f in fits]
  return "\n".join(lines) + "\n"


def vae_table(records: list[dict]) -> str:
  first = records[0] if records else {}
  lines = [f"\n### One VAE training step (784-200-200-16 ELU, batch {first.get('batch', '?')}, `model.fit`, "
           f"{len(first.get('epoch_seconds', []))} rounds of one {first.get('steps', '?')}-step epoch per row)\n",
           "| group | posterior | likelihood | XLA step | ms / step, fastest epoch | ms / step, median epoch "
           "| ratio to the group's first row: paired median | fastest | median |",
           "|---|---|---|---|---|---|---|---|---|"]
  paired = {(r["group"], r["posterior"], r["likelihood"], r["jit"]): r["paired_ratio"] for r in vae_ratios(records)}
  for (group, jit), rows in _grouped(records, lambda r: (r["group"], r["jit"])).items():
    first = rows[0]
    for r in rows:
      ratio = paired.get((group, r["posterior"], r["likelihood"], jit), 1.0)
      lines.append(f"| {group} | {r['posterior']} | {r['likelihood']} | {'yes' if jit else 'no'} | "
                   f"{1e3 * r['fastest_seconds']:.2f} | {1e3 * r['seconds']:.2f} | {ratio:.2f}× | "
                   f"{r['fastest_seconds'] / first['fastest_seconds']:.2f}× | {r['seconds'] / first['seconds']:.2f}× |")
  return "\n".join(lines) + "\n"


def report(data: dict) -> str:
  """OUT.md: the ratios, then the peer's table, every kernel table, the slopes and the VAE steps."""
  text = ratio_table(data)
  if data["summary"]["peer_ratios"]:
    text += peer_table(data["summary"]["peer_ratios"])
  if "kernels" in data:
    text += kernel_tables(data["kernels"]["records"])
  if data["summary"]["slopes"]:
    text += slope_table(data["summary"]["slopes"])
  if "vae_steps" in data:
    text += vae_table(data["vae_steps"]["records"])
  return text


def plot(records: list[dict], path: pathlib.Path) -> None:
  """Sample + log_prob + gradient against n (log-log), at b = 1 and b = 28, at the largest batch measured for
  each shape: time per example, and the peak memory of the call per example. One colour per implementation."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  colours = dict(zip(NAMES, plt.get_cmap("tab10").colors))
  largest = {}
  for r in (r for r in records if r["operation"] == "sample_log_prob_grad"):
    key = (r["implementation"], r["n"], r["b"])
    if r["batch"] >= largest.get(key, r)["batch"]:
      largest[key] = r
  figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for axis, b, field in [(axes[0], 1, "seconds"), (axes[1], 28, "seconds"), (axes[2], 28, "peak_bytes")]:
    for name in NAMES:
      points = sorted((n, r[field] / r["batch"]) for (impl, n, width), r in largest.items()
                      if impl == name and width == b and r[field] is not None)
      if points and not (field == "peak_bytes" and name == "memory_bound"):
        n, values = zip(*points)
        values = [v if field == "seconds" else max(v / 1e6, 1e-3) for v in values]
        axis.loglog(n, values, marker="o", color=colours[name], label=name)
    unit = "seconds per example" if field == "seconds" else "peak MB per example (floor 1e-3)"
    axis.set(xlabel="n", ylabel=unit, title=f"sample + log_prob + gradient, b = {b}"
             + (", peak memory" if field == "peak_bytes" else ""))
    axis.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize=8)
  figure.suptitle("largest batch measured per shape (128, fewer where the bands would pass 256 MB)", fontsize=9)
  figure.tight_layout()
  with files.replacing(path) as temporary:
    figure.savefig(temporary, dpi=110)
  plt.close(figure)


def load(out: pathlib.Path) -> dict:
  path = out.with_suffix(".json")
  return json.loads(path.read_text()) if path.exists() else {}


def store(out: pathlib.Path, section: str, value) -> None:
  """Replaces one section of OUT.json and rebuilds the summary, OUT.md and OUT.png from the whole file."""
  data = load(out)
  data[section] = value
  write_report(out, data)


def write_report(out: pathlib.Path, data: dict) -> None:
  data["summary"] = summary(data)
  files.write_json(out.with_suffix(".json"), data)
  files.write_text(out.with_suffix(".md"), report(data))
  if "kernels" in data:
    plot(data["kernels"]["records"], out.with_suffix(".png"))
  print(ratio_table(data) + f"\nEvery table: {out.with_suffix('.md')}")
