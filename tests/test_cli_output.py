"""What a new user sees: help and tables that fit 80 and 120 columns, and a terminal free of library noise."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import VGG_EDGE, vgg_edge

from vgg_edge.cli import app, metrics_table, parity_table
from vgg_edge.export.pipeline import ExportResult
from vgg_edge.ui import render_table

WIDTHS = (80, 120)
NOISE = re.compile(r"(?i)warning|deprecat|traceback|^[IWEF]\d{4} |absl|tensorflow binary")


def command_options() -> dict[str, list[str]]:
    import typer

    group = typer.main.get_command(app)
    return {name: [opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")] for name, cmd in group.commands.items()}


@pytest.mark.parametrize("command", sorted(command_options()))
def test_help_names_every_option_whole_at_80_columns(command):
    done = subprocess.run([str(VGG_EDGE), command, "--help"], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert max(map(len, done.stdout.splitlines())) <= 80 and "…" not in done.stdout
    words = set(re.findall(r"--[\w-]+", done.stdout))
    for option in command_options()[command]:
        assert option in words, option


def test_version():
    done = vgg_edge("--version")
    assert done.returncode == 0 and re.fullmatch(r"vgg-edge \d+\.\d+\.\d+\n", done.stdout)


@pytest.mark.parametrize("width", WIDTHS)
def test_parity_and_metrics_tables_never_cut_what_identifies_a_row(fp32_exports, trained_run, width):
    results = []
    for folder in sorted(p for p in fp32_exports.iterdir() if (p / "manifest.json").is_file()):
        doc = json.loads((folder / "manifest.json").read_text())
        results.append(ExportResult(doc["format"], doc["precision"], folder, doc["status"], doc))
    for wide in (False, True):
        text = render_table(parity_table(results, wide), width)
        for r in results:
            assert f"{r.format}-{r.precision}" in text and r.status in text
        if not wide:
            assert "…" not in text and max(map(len, text.splitlines())) <= width
    metrics = json.loads((trained_run / "metrics.json").read_text())
    text = render_table(metrics_table(metrics, "test split"), width)
    assert "…" not in text and all(f" {label} " in text for label in metrics["labels"])


def test_no_library_noise_reaches_the_terminal(tmp_path):
    """train (built-in digits), export (every format, int8), bench and predict through the console script:
    stderr holds only the product's own lines; the libraries' log lines went to the command's log file."""
    env = {**os.environ, "VGG_EDGE_CACHE": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(VGG_EDGE), *args], capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr
        noisy = [line for line in (done.stderr + done.stdout).splitlines() if NOISE.search(line)]
        assert not noisy, (args[0], noisy)
        return done

    run_dir, exported = tmp_path / "digits", tmp_path / "exported"
    run("train", "--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "1", "--fine-tune-blocks", "1", "--views", "2", "--out", str(run_dir))
    run("export", str(run_dir), "--format", "all", "--int8", "--calibration-size", "20", "--max-drop", "100", "--out", str(exported))
    run("bench", str(exported), "--batch-sizes", "1", "--min-runs", "2", "--min-seconds", "0", "--warmup-runs", "1", "--warmup-seconds", "0",
        "--images", "4", "--no-baseline", "--out", str(tmp_path / "bench"))
    images = sorted((tmp_path / "cache" / "sklearn-digits" / "7").glob("*.png"))[:3]
    run("predict", str(exported / "onnx-int8"), *map(str, images))
    log = (tmp_path / "cache" / "logs" / "train.log").read_text()
    assert "absl::InitializeLog" in log or re.search(r"^[IWE]\d{4} ", log, re.M), "the filter caught nothing: is it still needed?"


def test_predict_pointed_at_the_wrong_folder_says_what_to_pass(fp32_exports, trained_run, tmp_path):
    """A folder of artifacts names them; a training run says to export first; nothing is printed as a table."""
    image = next(Path(trained_run.parent).glob("*/split.json"))  # any existing file will do: the artifact is refused first
    for folder, expected in ((fp32_exports, f"pass one of them, e.g. {fp32_exports / 'onnx-fp32'}"), (trained_run, "export it first")):
        done = vgg_edge("predict", folder, image)
        assert done.returncode == 2 and expected in done.stderr and done.stdout == "", done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    done = vgg_edge("predict", fp32_exports / "onnx-fp32", empty)
    assert done.returncode == 1 and done.stdout == "" and "holds no image files" in done.stderr
