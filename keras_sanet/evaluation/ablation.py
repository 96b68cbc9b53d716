"""`keras-sanet ablation TABLE.toml`: train and score each row of a paper table, write the table.

A table file names the rows (training configs) and the table's columns:

```toml
title = "Table 2: ablation on PASCAL Context-59 val"
layout = "table2"          # or columns = ["model", "backbone", "sa", "cat", "aux", ...]
output = "runs/paper/context59_table2.md"
rows = [
  "context59_fcn_resnet50.toml",        # paths relative to this file
  "context59_sanet_resnet50_sa.toml",
]
```

For every row the command loads the config (with the `--set` overrides,
which apply to every row), and

1. reuses an eval JSON in the run folder that scored the finished model
   (`model.keras`, not older than it) on the same dataset, split and test
   protocol: what `keras-sanet eval --run-dir RUN` wrote, or an earlier
   ablation;
2. else, if the run is finished, scores it with `keras-sanet eval --run-dir`
   using the row's `[eval]` protocol (the paper configs carry the paper's:
   multi-scale 0.5-1.75, flip, sliding windows of the crop);
3. else trains it first (`keras-sanet train`; an interrupted run resumes),
   unless `--no-train`, in which case the row shows "-".

The Markdown table follows the paper's layout (its columns and model
labels: `Model | Backbone | SA | Cat | Aux | PAcc | mIoU` for Table 2,
`Model | PAcc | mIoU` for Table 4), with our figures, then the paper's
figures in two extra columns for comparison. The same rows go to a JSON
file beside it.
"""

import argparse
import contextlib
import dataclasses
import glob
import io
import json
import math
import os

# Column key -> header, as the paper's tables name them.
COLUMN_HEADERS = {
    "model": "Model",
    "backbone": "Backbone",
    "sa": "SA",
    "cat": "Cat",
    "aux": "Aux",
    "pixel_accuracy": "PAcc",
    "mean_iou": "mIoU",
}
LAYOUTS = {
    # Table 2: ablation of the SANet components on Context-59 (ResNet-50 rows + the best ones).
    "table2": ("model", "backbone", "sa", "cat", "aux", "pixel_accuracy", "mean_iou"),
    # Table 3: mIoU on Context-60.
    "table3": ("model", "backbone", "mean_iou"),
    # Table 4: FCN / FCN-SE / SANet on ResNet-50 and -101, 20 epochs each.
    "table4": ("model", "pixel_accuracy", "mean_iou"),
}
# How the paper writes the backbones.
BACKBONE_LABELS = {
    "resnet50": "Res50",
    "resnet101": "Res101",
    "efficientnetb7": "EffNet-b7",
}
CHECK = "✓"
TABLE_KEYS = ("title", "layout", "columns", "output", "rows", "note")


@dataclasses.dataclass
class AblationTable:
    """A parsed table file."""

    path: str
    title: str
    columns: tuple
    output: str
    rows: list  # absolute config paths
    note: str = ""


def read_table(path):
    """Reads and checks a table file; names the problem and its fix."""
    from keras_sanet.training.config import read_toml

    raw = read_toml(path, "Ablation table file")
    unknown = sorted(set(raw) - set(TABLE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; valid keys: {list(TABLE_KEYS)}.")
    if "columns" in raw:
        columns = raw["columns"]
    elif raw.get("layout") in LAYOUTS:
        columns = LAYOUTS[raw["layout"]]
    else:
        raise ValueError(
            f"{path}: give layout = one of {sorted(LAYOUTS)} or columns = a list of "
            f"{list(COLUMN_HEADERS)}."
        )
    bad = [c for c in columns if c not in COLUMN_HEADERS]
    if bad or not columns:
        raise ValueError(f"{path}: unknown column(s) {bad}; use {list(COLUMN_HEADERS)}.")
    rows = raw.get("rows")
    if not rows or not all(isinstance(r, str) for r in rows):
        raise ValueError(f"{path}: rows must be a non-empty list of config file paths.")
    folder = os.path.dirname(os.path.abspath(path))
    rows = [os.path.normpath(os.path.join(folder, row)) for row in rows]
    missing = [row for row in rows if not os.path.isfile(row)]
    if missing:
        raise ValueError(f"{path}: row config(s) not found: {', '.join(missing)}.")
    stem = os.path.splitext(os.path.basename(path))[0]
    return AblationTable(
        path=path,
        title=str(raw.get("title", stem)),
        columns=tuple(columns),
        output=str(raw.get("output", os.path.join("runs", "ablation", stem + ".md"))),
        rows=rows,
        note=str(raw.get("note", "")),
    )


def _protocol(config):
    e = config.eval
    return {
        "dataset": config.data.dataset,
        "split": e.split,
        "scales": [float(s) for s in e.scales],
        "flip": bool(e.flip),
        "crop_size": list(e.crop_size) or None,
        "base_size": e.base_size or None,
        "stride_ratio": float(e.stride_ratio),
    }


def protocol_tag(protocol, limit=None):
    """A file-name-safe summary of a protocol, e.g. `s0.5-0.75-1.0-flip-crop480x480-base520`."""
    tag = "s" + "-".join(f"{s:g}" for s in protocol["scales"])
    if protocol["flip"]:
        tag += "-flip"
    if protocol["crop_size"]:
        tag += "-crop{}x{}".format(*protocol["crop_size"])
    if protocol["base_size"]:
        tag += f"-base{protocol['base_size']}"
    if not math.isclose(protocol["stride_ratio"], 2 / 3, abs_tol=1e-6):
        tag += f"-stride{protocol['stride_ratio']:g}"
    if limit:
        tag += f"-limit{limit}"
    return tag


def _matches(results, protocol, limit, model_path):
    if not isinstance(results, dict) or "mean_iou" not in results:
        return False
    if os.path.abspath(str(results.get("weights"))) != os.path.abspath(model_path):
        return False
    for key, value in protocol.items():
        got = results.get(key)
        if key == "stride_ratio":
            if got is None or not math.isclose(float(got), value, abs_tol=1e-6):
                return False
        elif key == "scales":
            if got is None or [float(s) for s in got] != value:
                return False
        elif got != value:
            return False
    # The table's exact protocol: no size-bucket padding, the model's own (float32) policy.
    if results.get("size_multiple") not in (None, 0):
        return False
    if results.get("dtype_policy") not in (None, "float32"):
        return False
    return results.get("limit") == limit


def find_eval_results(run_dir, protocol, limit=None):
    """The newest eval JSON in `run_dir` that scored its `model.keras` with `protocol`, or None."""
    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(model_path):
        return None
    model_time = os.path.getmtime(model_path)
    found = []
    for path in glob.glob(os.path.join(run_dir, "*.json")):
        if os.path.getmtime(path) < model_time:
            continue  # scored an older model
        try:
            with open(path, encoding="utf-8") as f:
                results = json.load(f)
        except (OSError, ValueError):
            continue
        if _matches(results, protocol, limit, model_path):
            found.append((os.path.getmtime(path), path, results))
    if not found:
        return None
    _, path, results = max(found)
    return path, results


def _run_finished(run_dir):
    return os.path.isfile(os.path.join(run_dir, "model.keras")) and os.path.isfile(
        os.path.join(run_dir, "history.json")
    )


def _evaluate_run(run_dir, protocol, limit, progress):
    from keras_sanet import cli

    output = os.path.join(
        run_dir,
        f"model.eval-{protocol['dataset']}-{protocol['split']}-{protocol_tag(protocol, limit)}"
        ".json",
    )
    argv = [
        "--run-dir", run_dir,
        "--split", protocol["split"],
        "--scales", ",".join(f"{s:g}" for s in protocol["scales"]),
        "--flip" if protocol["flip"] else "--no-flip",
        "--crop-size", ",".join(str(c) for c in protocol["crop_size"] or [0]),
        "--base-size", str(protocol["base_size"] or 0),
        "--stride-ratio", repr(protocol["stride_ratio"]),
        "--output", output,
    ]
    if limit:
        argv += ["--limit", str(limit)]
    if not progress:
        argv.append("--no-progress")
    parser = cli.build_parser()
    args = parser.parse_args(["eval", *argv])
    from keras_sanet.evaluation.command import run as run_eval

    # The per-class table of every row would bury the ablation table: keep it in the JSON.
    with contextlib.redirect_stdout(io.StringIO()):
        run_eval(args)
    with open(output, encoding="utf-8") as f:
        return output, json.load(f)


def _model_label(config):
    if config.paper.model:
        return config.paper.model
    m = config.model
    return {"sa": "SANet", "se": "FCN-SE", "none": "FCN"}[m.attention]


def _cells(config, results):
    m = config.model
    cells = {
        "model": _model_label(config),
        "backbone": BACKBONE_LABELS.get(m.backbone, m.backbone),
        "sa": CHECK if m.attention == "sa" else "",
        "cat": CHECK if m.categorical_head and m.alpha > 0 else "",
        "aux": CHECK if m.auxiliary_head and m.beta > 0 else "",
        "pixel_accuracy": "-",
        "mean_iou": "-",
    }
    if results is not None:
        cells["pixel_accuracy"] = f"{100 * results['pixel_accuracy']:.1f}"
        cells["mean_iou"] = f"{100 * results['mean_iou']:.1f}"
    return cells


def _paper_cell(value):
    return f"{value:.1f}" if value else "-"


def format_ablation_table(table, rows):
    """The Markdown table: the paper's columns with our figures, then the paper's figures."""
    headers = [COLUMN_HEADERS[c] for c in table.columns]
    paper_columns = [c for c in ("pixel_accuracy", "mean_iou") if c in table.columns]
    headers += [f"{COLUMN_HEADERS[c]} (paper)" for c in paper_columns]
    align = [
        ":---:" if c in ("sa", "cat", "aux") else ("---:" if c in paper_columns else "---")
        for c in table.columns
    ] + ["---:"] * len(paper_columns)
    lines = [f"**{table.title}**", "", "| " + " | ".join(headers) + " |",
             "| " + " | ".join(align) + " |"]
    for row in rows:
        values = [row["cells"][c] for c in table.columns]
        values += [_paper_cell(row["paper"][c]) for c in paper_columns]
        lines.append("| " + " | ".join(v.replace("|", "/") for v in values) + " |")
    lines.append("")
    lines.append(
        "PAcc: pixel accuracy (%), mIoU: mean IoU (%), ours from `keras-sanet eval` on one "
        "confusion matrix over the split; (paper): the figures the paper reports."
    )
    protocols = sorted({row["protocol_text"] for row in rows if row["protocol_text"]})
    for text in protocols:
        lines.append(f"Test protocol: {text}.")
    missing = [row["config"] for row in rows if row["status"] != "scored"]
    if missing:
        lines.append(
            "Not scored yet (\"-\"): " + ", ".join(os.path.basename(c) for c in missing)
            + "; run `keras-sanet ablation` without --no-train to train them."
        )
    if table.note:
        lines.append(table.note)
    return "\n".join(lines)


def _protocol_text(protocol):
    text = f"{protocol['dataset']} {protocol['split']}, scales " + ", ".join(
        f"{s:g}" for s in protocol["scales"]
    )
    if protocol["base_size"]:
        text += f" of a {protocol['base_size']}-pixel long side"
    text += ", flip" if protocol["flip"] else ", no flip"
    if protocol["crop_size"]:
        text += ", sliding window {}x{}".format(*protocol["crop_size"])
    else:
        text += ", whole images"
    return text


def _select(rows, selection):
    if not selection:
        return set(range(len(rows)))
    chosen = set()
    stems = {os.path.splitext(os.path.basename(r))[0]: i for i, r in enumerate(rows)}
    for item in selection.split(","):
        item = item.strip()
        if item.isdigit() and 1 <= int(item) <= len(rows):
            chosen.add(int(item) - 1)
        elif item in stems:
            chosen.add(stems[item])
        else:
            raise ValueError(
                f"--rows {item!r} is neither a row number (1..{len(rows)}) nor a row config "
                f"name ({', '.join(stems)})."
            )
    return chosen


def run_ablation(
    table_path,
    overrides=(),
    train_missing=True,
    runs_dir=None,
    rows=None,
    output=None,
    limit=None,
    progress=True,
    verbose="auto",
):
    """Trains/scores each row of a table file and writes the table; returns `(markdown, rows)`.

    Args:
        table_path: the table TOML (see the module docstring).
        overrides: `section.key=value` strings applied to every row config.
        train_missing: train rows whose run is not finished (else show "-").
        runs_dir: put each row's run in `runs_dir/<config name>` instead of
            its `train.output_dir`.
        rows: `"1,3"` or config names: only these rows are trained/scored;
            the others are read when finished, else shown as "-".
        output: the Markdown file (default: the table's `output`); a JSON of
            the rows is written beside it.
        limit: score only the first N images of the split (quick checks).
        progress: progress bars.
        verbose: `fit` verbosity of training.
    """
    from keras_sanet.training.config import load_config

    table = read_table(table_path)
    chosen = _select(table.rows, rows)
    results_rows = []
    for index, config_path in enumerate(table.rows):
        config = load_config(config_path, overrides)
        if runs_dir:
            config.train.output_dir = os.path.join(
                runs_dir, os.path.splitext(os.path.basename(config_path))[0]
            )
        run_dir = config.train.output_dir
        protocol = _protocol(config)
        found = find_eval_results(run_dir, protocol, limit)
        results, eval_path, status = None, None, "not trained"
        if found is not None:
            (eval_path, results), status = found, "scored"
        elif index in chosen:
            if not _run_finished(run_dir) and train_missing:
                from keras_sanet.training.trainer import train

                print(f"[{index + 1}/{len(table.rows)}] training {config_path} -> {run_dir}")
                train(config, verbose=verbose)
            if _run_finished(run_dir):
                print(f"[{index + 1}/{len(table.rows)}] scoring {run_dir}")
                eval_path, results = _evaluate_run(run_dir, protocol, limit, progress)
                status = "scored"
                print(
                    f"[{index + 1}/{len(table.rows)}] pixel accuracy "
                    f"{100 * results['pixel_accuracy']:.2f}%, mIoU "
                    f"{100 * results['mean_iou']:.2f}% ({eval_path})"
                )
        results_rows.append(
            {
                "config": config_path,
                "run_dir": run_dir,
                "status": status,
                "eval_json": eval_path,
                "cells": _cells(config, results),
                "paper": {
                    "figure": config.paper.figure,
                    "pixel_accuracy": config.paper.pixel_accuracy,
                    "mean_iou": config.paper.mean_iou,
                },
                "protocol": protocol,
                "protocol_text": _protocol_text(protocol) if results is not None else "",
                "mean_iou": None if results is None else results["mean_iou"],
                "pixel_accuracy": None if results is None else results["pixel_accuracy"],
            }
        )
    markdown = format_ablation_table(table, results_rows)
    output = output or table.output
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write(markdown + "\n")
    json_path = os.path.splitext(output)[0] + ".json"
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"title": table.title, "table": table.path, "rows": results_rows}, f, indent=2)
        f.write("\n")
    return markdown, results_rows, output


# -- the command -----------------------------------------------------------------

_DESCRIPTION = """\
Train (or resume) and score every row of one of the paper's tables, then write the table
in the paper's layout (Markdown, plus a JSON of the rows), our figures beside the paper's.

Rows whose run folder already holds a finished model are not trained again; rows already
scored with the same protocol are not scored again. Example:

  keras-sanet ablation configs/paper/context59_table2.toml --set data.root=data/VOCdevkit/VOC2010
  keras-sanet ablation configs/paper/context59_table4.toml --no-train    # table of what is done
"""


def add_arguments(parser):
    """Adds the `keras-sanet ablation` options to an argparse parser."""
    parser.description = _DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("table", help="table file (TOML: title, layout, output, rows)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a value in every row config, e.g. --set data.root=/data/VOC2010 "
        "(repeatable)",
    )
    parser.add_argument(
        "--no-train", action="store_true",
        help="do not train: rows without a finished run show '-'",
    )
    parser.add_argument(
        "--rows", default=None,
        help="only train/score these rows (1-based numbers or config names, comma-separated)",
    )
    parser.add_argument(
        "--runs-dir", default=None,
        help="put each row's run in RUNS_DIR/<config name> instead of its train.output_dir",
    )
    parser.add_argument("--output", default=None, help="Markdown file (default: the table's)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--verbose", default="auto", choices=("auto", "0", "1", "2"),
        help="Keras fit verbosity while training",
    )


def run(args):
    """Runs `keras-sanet ablation`; returns 0."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit} must be >= 1 (images to score).")
    markdown, _, output = run_ablation(
        args.table,
        overrides=args.overrides,
        train_missing=not args.no_train,
        runs_dir=args.runs_dir,
        rows=args.rows,
        output=args.output,
        limit=args.limit,
        progress=not args.no_progress,
        verbose=args.verbose if args.verbose == "auto" else int(args.verbose),
    )
    print(markdown)
    print(f"\nTable written to {output} (rows as JSON: {os.path.splitext(output)[0]}.json)")
    return 0
