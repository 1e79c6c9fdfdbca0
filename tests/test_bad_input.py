"""The bad-input suite: every mistake a user can type gets one line naming the problem, a non-zero exit
and no traceback, before any long work starts.

`CASES` is the table: (argv, fragment the one-line error must contain). Each case runs the real
command line in-process through click's CliRunner (the same `main` as `iee-deploy`); a few run as
a real subprocess too. Option classes covered: paths (missing, unwritable, a file where a folder
belongs and back, a folder that cannot be made), numbers (negative, zero, NaN, inf, out of range,
too small for the model or the dataset), enums (unknown names), files of the wrong kind
(truncated, not a torch file, another architecture's weights, an empty LUT) and interrupted or
foreign run folders.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_user_error, run_cli

from iee_deploy.cli import LAZY_COMMANDS, flag_of, main
from iee_deploy.errors import ConfigError, UserError
from iee_deploy.io import check_writable
from iee_deploy.methods import SparsityConfig
from iee_deploy.train import TrainConfig, minimum_resolution

UNWRITABLE = "/sys/iee-deploy-test"  # not writable even by root


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files of the wrong kind, made once: {name: path}."""
    root = tmp_path_factory.mktemp("bad-input")
    (root / "a-file").write_text("not a folder\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "text.pt").write_text("this is not a torch file\n")
    full = root / "full.pt"
    torch.save({"weight": torch.zeros(4)}, full)
    (root / "truncated.pt").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    from iee_deploy.models import build_model

    torch.save(build_model("resnet56", 10, 8).state_dict(), root / "resnet56.pt")  # same layer names, more blocks
    torch.save(build_model("resnet20", 100, 8).state_dict(), root / "resnet20-100.pt")  # same names, other shapes
    (root / "empty.csv").write_text("")
    from synthetic_lut import write_synthetic_lut

    lut = write_synthetic_lut(root / "lut.csv", "resnet20", build_model("resnet20", 10, 8), 10, 8)
    write_synthetic_lut(root / "flat-lut.csv", "resnet20", build_model("resnet20", 10, 8), 10, 8,
                        layer_ms=lambda sig, cin, cout: 0.01)  # every width as fast: nothing prunes faster
    (root / "cifar-no-batches" / "cifar-10-batches-py").mkdir(parents=True)
    (root / "truncated-lut.csv").write_text(lut.read_text()[: len(lut.read_text()) // 2] + "conv_x,3\n")
    (root / "truncated-lut.json").write_text(lut.with_suffix(".json").read_text())
    (root / "finished-run").mkdir()
    (root / "finished-run" / "run.json").write_text("{}\n")
    (root / "finished-run" / "checkpoint.pt").write_bytes(b"")  # a run writes its first checkpoint at the start
    (root / "other-run").mkdir()
    (root / "other-run" / "checkpoint.pt").write_bytes(b"")
    (root / "other-run" / "config.json").write_text("{}\n")
    (root / "not-a-run").mkdir()
    meta = json.loads(lut.with_suffix(".json").read_text())
    for name, change in (("lut-batch-zero", {"batch": 0}), ("lut-resolution-text", {"resolution": "8"}),
                         ("lut-statistic-mean", {"statistic": "mean"}),
                         ("lut-slope-negative", {"calibration": {**(meta["calibration"] or {}), "a": -1.0}}),
                         ("lut-no-calibration", {"calibration": None})):
        (root / f"{name}.csv").write_text(lut.read_text())
        (root / f"{name}.json").write_text(json.dumps({**meta, **change}))
    (root / "lut-binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (root / "lut-binary.json").write_text(json.dumps(meta))
    rows = lut.read_text().splitlines(keepends=True)
    first = rows[1].split(",")
    (root / "lut-zero-latency.csv").write_text("".join([rows[0], ",".join(first[:3] + ["0", "0", "0"] + first[6:]),
                                                        *rows[2:]]))
    (root / "lut-zero-latency.json").write_text(json.dumps(meta))
    (root / "garbage.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "list.yaml").write_text("- cpu\n- gpu\n")
    (root / "big-run").mkdir()
    (root / "big-run" / "run.json").write_text(json.dumps({"model": "resnet20", "num_classes": 10, "resolution": 1024,
                                                           "dataset": "digits", "finished": True}))
    (root / "detection-run").mkdir()  # a finished (unstructured) run of a two-stage detector
    (root / "detection-run" / "run.json").write_text(json.dumps({"model": "detectors:fasterrcnn_tiny", "num_classes": 11,
                                                                 "resolution": 64, "dataset": "digits", "finished": True,
                                                                 "kind": "unstructured"}))
    (root / "detection-run" / "config.json").write_text(json.dumps({"task": "detection"}))
    from detectors import fasterrcnn_tiny

    torch.save(fasterrcnn_tiny(11).state_dict(), root / "detection-run" / "final_model.pt")
    (root / "torn-config-run").mkdir()
    (root / "torn-config-run" / "checkpoint.pt").write_bytes(b"")
    (root / "torn-config-run" / "config.json").write_text('{"model": "resn')
    (root / "torn-run-json").mkdir()
    (root / "torn-run-json" / "run.json").write_text('{"model": "resnet20", "num_cl')
    (root / "list-run-json").mkdir()
    (root / "list-run-json" / "run.json").write_text('[1, 2]')
    for name, text in (("foreign-engine-json", '{"mine": 1}'), ("list-engine-json", "[1, 2]")):  # a user's own engine.json
        (root / name).mkdir()
        (root / name / "engine.json").write_text(text)
    (root / "engine-md-only").mkdir()  # a user's own notes named engine.md
    (root / "engine-md-only" / "engine.md").write_text("my notes\n")
    (root / "meta-only").mkdir()  # a .json where a LUT's metadata would go, without its table
    (root / "meta-only" / "lut.json").write_text('{"mine": 1}')
    (root / "model-folder").mkdir()  # a folder of the user's own: a model's config.json and notes, no run
    (root / "model-folder" / "config.json").write_text('{"model_type": "resnet", "num_labels": 10}')
    (root / "results-only").mkdir()  # a finished run's results whose checkpoint.pt was deleted
    (root / "results-only" / "summary.md").write_text("# Training run\n")
    (root / "engine-folder").mkdir()  # build-engine's output: a run there would mix with it
    (root / "engine-folder" / "engine.json").write_text("{}\n")
    (root / "half-run").mkdir()
    (root / "half-run" / "config.json").write_text("{}\n")
    nan = build_model("resnet20", 10, 8).state_dict()
    nan["fc.weight"][0, 0] = float("nan")
    torch.save(nan, root / "nan.pt")
    (root / "nan-final-run").mkdir()  # a finished run whose final weights are NaN
    (root / "nan-final-run" / "run.json").write_text(json.dumps({"model": "resnet20", "num_classes": 10, "resolution": 8,
                                                                 "dataset": "digits", "finished": True}))
    torch.save(nan, root / "nan-final-run" / "final_model.pt")
    _image_tree(root / "imf-mismatch", {"train": ["cat", "dog"], "val": ["cat", "horse"]})
    _image_tree(root / "imf-one", {"train": ["cat"], "val": ["cat"]})
    _image_tree(root / "imf-link", {"train": ["cat", "dog"], "val": ["cat", "dog"]})
    (root / "imf-link" / "train" / "cat" / "more").symlink_to(root / "imf-link" / "train" / "dog")
    _image_tree(root / "imf-two", {"train": ["cat", "dog"], "test": ["cat", "dog"]})
    _image_tree(root / "imf-cross-link", {"train": ["cat", "dog"], "val": ["cat", "dog"]})  # val's cat -> train's dog
    (root / "imf-cross-link" / "val" / "cat" / "more").symlink_to(root / "imf-cross-link" / "train" / "dog")
    _image_tree(root / "imf-image-link", {"train": ["cat", "dog"], "val": ["cat", "dog"]})
    (root / "imf-image-link" / "train" / "cat" / "9.png").symlink_to(root / "imf-image-link" / "train" / "dog" / "0.png")
    _image_tree(root / "imf-run-inside", {"train": ["cat", "dog"], "val": ["cat", "dog"]})  # `train --out train/cat`
    (root / "imf-run-inside" / "train" / "cat" / "run.json").write_text("{}\n")
    return {p.name: str(p) for p in root.iterdir()}


def _image_tree(root: Path, splits: dict[str, list[str]], per_class: int = 2) -> Path:
    """An ImageFolder tree of tiny real PNG files: {split: [class, ...]}."""
    from PIL import Image

    for split, classes in splits.items():
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(root / split / c / f"{i}.png")
    return root


LUT_ARGS = ["train", "--resolution", "8", "--latency-ratio", "0.5", "--lut"]

CASES: list[tuple[str, list[str], str]] = [
    # id, argv ({name} is a path from `files`, {tmp} a fresh folder), fragment of the one-line error
    # --- train: numbers
    ("resolution-negative", ["train", "--resolution", "-32"], "--resolution"),
    ("resolution-zero", ["train", "--resolution", "0"], "--resolution"),
    ("resolution-too-small", ["train", "--resolution", "2"], "minimum of 4 px"),
    ("resolution-huge", ["train", "--resolution", "100000"], "--resolution 100000 px is above 2048 px"),
    ("num-classes-too-few", ["train", "--num-classes", "3"], "--num-classes 3 is fewer than the 10 classes"),
    ("num-classes-zero", ["train", "--num-classes", "0"], "--num-classes"),
    ("lr-negative", ["train", "--lr", "-0.1"], "--lr"),
    ("lr-nan", ["train", "--lr", "nan"], "--lr nan"),
    ("lr-inf", ["train", "--lr", "inf"], "--lr inf"),
    ("workers-negative", ["train", "--workers", "-1"], "--workers"),
    ("epochs-zero", ["train", "--epochs", "0"], "--epochs"),
    ("epochs-nan", ["train", "--epochs", "nan"], "--epochs nan"),
    ("batch-size-zero", ["train", "--batch-size", "0"], "--batch-size"),
    ("subset-zero", ["train", "--subset", "0"], "--subset"),
    ("subset-below-classes", ["train", "--subset", "5"], "--subset 5 holds fewer images than the 10 classes of digits"),
    ("val-subset-below-classes", ["train", "--subset", "64", "--val-subset", "3"], "--val-subset 3 holds fewer images"),
    ("momentum-one", ["train", "--momentum", "1"], "--momentum"),
    ("weight-decay-nan", ["train", "--weight-decay", "nan"], "--weight-decay nan"),
    ("warmup-negative", ["train", "--warmup-epochs", "-1"], "--warmup-epochs"),
    ("seed-negative", ["train", "--seed", "-1"], "--seed"),
    ("seed-huge", ["train", "--seed", str(2**64 + 5)], "--seed"),
    ("checkpoint-every-negative", ["train", "--checkpoint-every", "-5"], "--checkpoint-every"),
    ("sparsity-one", ["train", "--sparsity", "1"], "--sparsity"),
    ("sparsity-nan", ["train", "--sparsity", "nan"], "--sparsity nan is not a fraction"),
    ("omega0-above-one", ["train", "--omega0", "2"], "--omega0"),
    ("omega0-nan", ["train", "--omega0", "nan"], "--omega0 nan is not a fraction"),
    ("update-end-zero", ["train", "--update-end", "0"], "--update-end"),
    ("gmp-start-negative", ["train", "--method", "gmp", "--gmp-start", "-0.1"], "--gmp-start"),
    ("descent-one", ["train", "--descent", "1"], "--descent"),
    ("latency-ms-negative", ["train", "--latency-ms", "-1"], "--latency-ms"),
    ("latency-ms-nan", ["train", "--latency-ms", "nan"], "--latency-ms nan"),
    ("latency-ratio-above-one", ["train", "--latency-ratio", "1.5"], "--latency-ratio"),
    ("latency-ratio-nan", ["train", "--latency-ratio", "nan"], "--latency-ratio nan is not a fraction"),
    ("hjq-two-numbers", ["train", "--hjq", "1,2"], "--hjq"),
    ("hjq-zero-h", ["train", "--hjq", "0,1,1"], "--hjq (0, 1, 1) is invalid"),
    ("delta-t-zero", ["train", "--method", "rigl", "--delta-t", "0"], "--delta-t"),
    ("delta-t-word", ["train", "--method", "rigl", "--delta-t", "often"], "--delta-t"),
    # --- train: N:M and contradictions between options
    ("sparsity-empties-a-layer", ["train", "--sparsity", "0.9999", "--distribution", "uniform", "--method", "static",
                                  "--resolution", "8", "--out", "{tmp}/run"], "with no weight at all"),
    ("nm-no-layer-fits", ["train", "--nm", "1:1024", "--method", "static", "--resolution", "8", "--out", "{tmp}/run"],
     "no layer can hold the 1:1024 pattern"),
    ("nm-dash", ["train", "--nm", "2-4"], "--nm '2-4' is not an N:M pattern"),
    ("nm-reversed", ["train", "--nm", "4:2"], "--nm '4:2'"),
    ("nm-zero", ["train", "--nm", "0:4"], "--nm '0:4'"),
    ("nm-contradicts-sparsity", ["train", "--nm", "2:4", "--sparsity", "0.9"], "--sparsity 0.9 contradicts --nm 2:4"),
    ("nm-global", ["train", "--nm", "2:4", "--distribution", "global"], "--distribution global"),
    ("halp-window-of-no-steps", ["train", "--resolution", "8", "--method", "halp", "--latency-ratio", "0.9", "--lut", "{lut.csv}",
                                 "--subset", "256", "--batch-size", "16", "--epochs", "1"],  # 5/130 of 16 steps: none
     "dT = 1 steps is longer than the 0 steps of the pruning window; raise --update-end or train for more --epochs"),
    ("budget-and-sparsity", ["train", "--latency-ratio", "0.5", "--sparsity", "0.5"], "--sparsity"),
    ("lut-without-budget", ["train", "--target", "cpu"], "need a latency budget"),
    ("halp-without-budget", ["train", "--method", "halp"], "--method halp"),
    ("unused-option", ["train", "--method", "rigl", "--hjq", "2,1,2", "--out", "{tmp}"], "does not use --hjq"),
    ("unused-flag", ["train", "--method", "set", "--no-freeze", "--out", "{tmp}"], "does not use --no-freeze"),
    # --- train: enums and names
    ("unknown-model", ["train", "--model", "resnet5"], "unknown model 'resnet5'"),
    ("unknown-dataset", ["train", "--dataset", "mnist-foo"], "unknown dataset 'mnist-foo'"),
    ("unknown-method", ["train", "--method", "lottery"], "--method"),
    ("unknown-distribution", ["train", "--distribution", "normal"], "--distribution"),
    ("unknown-device", ["train", "--device", "tpu"], "--device"),
    # --- train: paths and files of the wrong kind
    ("data-dir-missing", ["train", "--dataset", "imagefolder", "--data-dir", "/nonexistent"], "--data-dir '/nonexistent'"),
    ("data-dir-needed", ["train", "--dataset", "fashion-mnist"], "needs a --data-dir"),
    ("checkpoint-missing", ["train", "--checkpoint", "/nonexistent.pt"], "--checkpoint"),
    ("checkpoint-empty", ["train", "--checkpoint", "{empty.pt}"], "is not a torch checkpoint"),
    ("checkpoint-text", ["train", "--checkpoint", "{text.pt}"], "is not a torch checkpoint"),
    ("checkpoint-truncated", ["train", "--checkpoint", "{truncated.pt}"], "cannot be read"),
    ("checkpoint-other-depth", ["train", "--checkpoint", "{resnet56.pt}"], "does not match the model"),
    ("checkpoint-other-shapes", ["train", "--checkpoint", "{resnet20-100.pt}"], "does not match the model"),
    ("lut-missing", ["train", "--latency-ratio", "0.5", "--lut", "/nonexistent.csv"], "--lut"),
    ("lut-empty", ["train", "--latency-ratio", "0.5", "--lut", "{empty.csv}"], "LUT metadata"),
    ("validate-lut-lut-missing", ["validate-lut", "--lut", "{tmp}/nosuch.csv", "--model", "resnet20"],
     "nosuch.csv' does not exist; pass a LUT written by `iee-deploy profile`"),
    ("lut-its-json", ["train", "--resolution", "8", "--latency-ratio", "0.5", "--lut", "{lut.json}"],
     "lut.json' is not a LUT table (.csv); pass the .csv"),
    ("lut-truncated", ["train", "--resolution", "8", "--latency-ratio", "0.5", "--lut", "{truncated-lut.csv}"], "is corrupt"),
    ("lut-batch-zero", LUT_ARGS + ["{lut-batch-zero.csv}"], "batch is 0, not a whole number >= 1"),
    ("lut-resolution-text", LUT_ARGS + ["{lut-resolution-text.csv}"], "resolution is '8', not a whole number"),
    ("lut-statistic-unknown", LUT_ARGS + ["{lut-statistic-mean.csv}"], "statistic is 'mean', not median or min"),
    ("lut-slope-negative", LUT_ARGS + ["{lut-slope-negative.csv}"], "the slope must be positive"),
    ("lut-no-calibration", LUT_ARGS + ["{lut-no-calibration.csv}"], "predictions are uncalibrated"),
    ("lut-binary", LUT_ARGS + ["{lut-binary.csv}"], "is corrupt (not text)"),
    ("lut-zero-latency", LUT_ARGS + ["{lut-zero-latency.csv}"], "has impossible values"),
    ("target-binary", ["profile", "--target", "{garbage.yaml}", "--out", "{tmp}/t.csv"], "garbage.yaml' is not text"),
    ("target-a-list", ["profile", "--target", "{list.yaml}", "--out", "{tmp}/t.csv"], "list.yaml' does not hold a mapping"),
    ("lut-other-target", ["train", "--resolution", "8", "--latency-ratio", "0.5", "--lut", "{lut.csv}", "--target", "titanv"],
     "--target titanv does not match the LUT"),
    ("lut-other-model", ["train", "--model", "wrn22_2", "--resolution", "8", "--latency-ratio", "0.5", "--lut", "{lut.csv}"],
     "not wrn22_2"),
    ("lut-other-resolution", ["train", "--resolution", "16", "--latency-ratio", "0.5", "--lut", "{lut.csv}"], "resolution"),
    ("lut-other-classes", ["train", "--resolution", "8", "--num-classes", "20", "--latency-ratio", "0.5", "--lut", "{lut.csv}"],
     "20"),
    ("latency-budget-impossible", ["train", "--resolution", "8", "--latency-ms", "0.0001", "--lut", "{lut.csv}"],
     "below the smallest achievable network's latency"),
    ("out-holds-a-run", ["train", "--out", "{finished-run}"], "already holds a training run; add --resume"),
    ("out-holds-a-users-config", ["train", "--out", "{model-folder}"],
     "model-folder' holds config.json but no training run: a run there would replace it; choose another --out"),
    ("out-holds-results-without-a-run", ["train", "--out", "{results-only}"], "holds summary.md but no training run"),
    ("out-holds-an-engine", ["train", "--out", "{engine-folder}"], "holds engine.json but no training run"),
    ("resume-other-settings", ["train", "--resume", "--out", "{other-run}"], "--resume with different settings"),
    ("out-unwritable", ["train", "--out", UNWRITABLE + "/run"], "--out '/sys/iee-deploy-test/run' is not writable"),
    ("out-is-a-file", ["train", "--out", "{a-file}"], "is a file"),
    ("out-under-a-file", ["train", "--out", "{a-file}/run"], "cannot be made"),
    ("resume-nothing", ["train", "--resume", "--out", "{tmp}"], "nothing to resume"),
    ("resume-half-run", ["train", "--resume", "--out", "{half-run}"], "nothing to resume"),
    ("resume-torn-config", ["train", "--resume", "--out", "{torn-config-run}"], "config.json' is corrupt"),
    ("build-engine-batch-too-large", ["build-engine", "--run", "{big-run}", "--batch", "100000", "--out", "{tmp}/engine"],
     "use a --batch of at most"),
    ("build-engine-out-holds-a-users-engine-json", ["build-engine", "--run", "{big-run}", "--out", "{foreign-engine-json}"],
     "holds an engine.json that names no run; choose another --out, or add --force"),
    ("build-engine-out-holds-a-list-engine-json", ["build-engine", "--run", "{big-run}", "--out", "{list-engine-json}"],
     "holds an engine.json that names no run"),
    ("build-engine-out-is-another-run", ["build-engine", "--run", "{big-run}", "--out", "{finished-run}"],
     "finished-run' is the folder of another run, not of"),
    ("build-engine-nan-final-model", ["build-engine", "--run", "{nan-final-run}", "--out", "{tmp}/engine"],
     "final_model.pt' holds NaN or inf values in 'fc.weight'"),
    ("build-engine-out-holds-a-users-engine-md", ["build-engine", "--run", "{big-run}", "--out", "{engine-md-only}"],
     "holds an engine.md without engine.json; choose another --out, or add --force"),
    ("build-engine-torn-run-json", ["build-engine", "--run", "{torn-run-json}", "--out", "{tmp}/engine"],
     "run.json' is corrupt"),
    ("build-engine-run-json-a-list", ["build-engine", "--run", "{list-run-json}", "--out", "{tmp}/engine"],
     "run.json' is corrupt (a JSON list"),
    ("build-engine-two-stage-detector", ["build-engine", "--run", "{detection-run}", "--out", "{tmp}/engine"],
     "FasterRCNN is a two-stage detector: engines are built for one-stage detectors (SSD, SSDlite, RetinaNet, FCOS, or"),
    ("build-engine-int8-two-stage-detector", ["build-engine", "--run", "{detection-run}", "--precision", "int8",
                                              "--out", "{tmp}/engine"], "train a one-stage detector"),
    ("build-engine-fp8-on-onnxruntime", ["build-engine", "--run", "{big-run}", "--precision", "fp8", "--out", "{tmp}/engine"],
     "choose --precision fp32 or fp16 or int8, or the tensorrt backend for fp8"),
    ("build-engine-calibration-at-fp32", ["build-engine", "--run", "{big-run}", "--calibration-images", "8",
                                          "--out", "{tmp}/engine"], "drop them, or ask for --precision int8"),
    # --- train: labels must be right, and a diverged run is no finished run
    ("imagefolder-val-class-not-in-train", ["train", "--dataset", "imagefolder", "--data-dir", "{imf-mismatch}",
                                            "--resolution", "8"], "only in validation: horse; only in training: dog"),
    ("imagefolder-one-class", ["train", "--dataset", "imagefolder", "--data-dir", "{imf-one}", "--resolution", "8"],
     "a classifier needs at least 2"),
    ("imagefolder-link-into-another-class", ["train", "--dataset", "imagefolder", "--data-dir", "{imf-link}",
                                             "--resolution", "8"], "leads into class 'dog'"),
    ("imagefolder-link-into-another-class-of-the-other-split", ["train", "--dataset", "imagefolder", "--data-dir",
                                                                "{imf-cross-link}", "--resolution", "8"],
     "val/cat/more' in class 'cat' leads into class 'dog''s folder"),
    ("imagefolder-run-inside-a-class", ["train", "--dataset", "imagefolder", "--data-dir", "{imf-run-inside}",
                                        "--resolution", "8"], "(run.json): its plots would be read as images of class 'cat'"),
    ("factory-raises", ["train", "--model", "user_model:raises", "--resolution", "8"],
     "factory 'user_model:raises' failed when called with num_classes=10 (ValueError: weights file 'tiny.pt' not found)"),
    ("factory-needs-arguments", ["train", "--model", "user_model:needs_width", "--resolution", "8"],
     "needs argument(s) width"),
    ("factory-no-parameters", ["train", "--model", "user_model:no_parameters", "--resolution", "8"],
     "takes no num_classes argument"),
    ("factory-returns-tuple", ["train", "--model", "user_model:with_transforms", "--resolution", "8"],
     "returned a tuple, not one nn.Module"),
    ("factory-lazy-layer", ["train", "--model", "user_model:lazy", "--resolution", "8"],
     "factory 'user_model:lazy' returned a model whose parameter '1.weight' is not initialised (a Lazy module)"),
    ("factory-half-precision", ["train", "--model", "user_model:half", "--resolution", "8"],
     "'stem.0.weight' is torch.float16, not torch.float32; return the model in float32"),
    ("detector-as-classifier", ["train", "--model", "detectors:ssdlite", "--resolution", "64", "--subset", "64"],
     "the model is a detector (SSD), not a classifier; train it with --task detection"),
    ("model-head-width", ["train", "--model", "user_model:fixed_head", "--resolution", "8"],
     "the model scores 7 classes, not the 10"),
    ("checkpoint-nan", ["train", "--checkpoint", "{nan.pt}", "--resolution", "8"], "holds NaN or inf values in 'fc.weight'"),
    ("imagefolder-image-link-into-another-class", ["train", "--dataset", "imagefolder", "--data-dir", "{imf-image-link}",
                                                   "--resolution", "8"], "is a link to class 'dog''s image"),
    ("batch-of-one-for-batchnorm", ["train", "--resolution", "4", "--subset", "64", "--batch-size", "1", "--method", "static",
                                    "--sparsity", "0.5", "--out", "{tmp}/run"],  # refused at the first step: 1 x 1 maps
     "a batch of 1 image(s) is too small for the model's BatchNorm layers"),
    ("warmup-not-shorter-than-training", ["train", "--epochs", "1", "--warmup-epochs", "1"],
     "--warmup-epochs 1 is not shorter than --epochs 1"),
    # --- an empty path is no folder (Path('') is the current one): every --out
    ("train-out-empty", ["train", "--out", ""], "--out '' is empty"),
    ("build-engine-out-empty", ["build-engine", "--run", "{big-run}", "--out", ""], "--out '' is empty"),
    ("profile-out-beside-a-json", ["profile", "--target", "cpu", "--out", "{meta-only}/lut.csv"],
     "lut.json', where the LUT --out"),
    ("profile-out-empty", ["profile", "--target", "cpu", "--out", ""], "--out '' is empty"),
    # --- every command that builds a model bounds its input size before allocating it
    ("graph-resolution-huge", ["graph", "--resolution", "100000"], "--resolution 100000 px is above 2048 px"),
    ("profile-resolution-huge", ["profile", "--target", "cpu", "--resolution", "100000", "--out", "{tmp}/t.csv"],
     "--resolution 100000 px is above 2048 px"),
    ("validate-lut-seed-negative", ["validate-lut", "--lut", "{lut.csv}", "--seed", "-5"], "--seed"),
    ("validate-lut-json-is-the-luts-own", ["validate-lut", "--lut", "{lut.csv}", "--json", "{lut.json}"],
     "is a file of the LUT"),
    # --- a report never replaces a file of a LUT, a run or an engine (later commands read them back)
    ("graph-json-over-a-luts-metadata", ["graph", "--model", "resnet20", "--resolution", "8", "--json", "{lut.json}"],
     "is a file of the LUT"),
    ("models-json-over-a-runs-file", ["models", "resnet2*", "--json", "{other-run}/config.json"],
     "is a file of the run"),
    ("validate-lut-json-over-another-lut", ["validate-lut", "--lut", "{lut.csv}", "--json", "{flat-lut.csv}"],
     "is a file of the LUT"),
    ("validate-lut-resolution-huge", ["validate-lut", "--lut", "{lut.csv}", "--resolution", "100000"],
     "--resolution 100000 px is above 2048 px"),
    ("profile-batch-too-large", ["profile", "--target", "cpu", "--model", "resnet20", "--resolution", "8", "--num-classes",
                                 "10", "--batch", "100000000", "--out", "{tmp}/t.csv"],
     "of fp32 input and output of the widest layer at 8 px"),
    ("digits-with-data-dir", ["train", "--data-dir", "{not-a-run}", "--resolution", "8"],
     "--dataset digits is embedded (offline) and reads no --data-dir"),
    ("cifar-folders-of-two-classes", ["train", "--dataset", "cifar10", "--data-dir", "{imf-two}", "--resolution", "8"],
     "imf-two' holds 2 class folders; CIFAR-10 has 10; pass --dataset imagefolder"),
    ("cifar-batches-missing", ["train", "--dataset", "cifar10", "--data-dir", "{cifar-no-batches}", "--resolution", "8"],
     "cifar-10-batches-py' is incomplete or damaged"),
    ("lut-nothing-prunes-faster", LUT_ARGS + ["{flat-lut.csv}"],
     "latency budget --latency-ratio 0.5 ("),  # the field the budget came from, as the command's flag
    ("lut-nothing-prunes-faster-ms", ["train", "--resolution", "8", "--latency-ms", "0.05", "--lut", "{flat-lut.csv}"],
     "latency budget --latency-ms 0.05 cannot be met: the LUT predicts no sub-network faster"),
    ("graph-model-head-width", ["graph", "--model", "user_model:fixed_head", "--resolution", "8", "--num-classes", "10"],
     "the model scores 7 classes, not the 10 asked for"),
    ("profile-min-channels-above-every-layer", ["profile", "--target", "cpu", "--model", "resnet20", "--resolution", "8",
                                               "--num-classes", "10", "--min-channels", "100000", "--out", "{tmp}/t.csv"],
     "--min-channels 100000 channels is not below the widest layer's 64"),
    ("profile-resume-other-step", ["profile", "--target", "cpu", "--model", "resnet20", "--resolution", "8", "--num-classes",
                                   "10", "--step", "32", "--align", "4", "--out", "{lut.csv}", "--resume"],
     "it was profiled with --step 8, this run asks for 32"),
    # --- graph
    ("graph-json-unwritable", ["graph", "--json", "/sys/g.json"], "--json '/sys/g.json' is not writable"),
    ("graph-json-is-a-folder", ["graph", "--json", "{tmp}"], "is a directory"),
    ("graph-json-dash", ["graph", "--json", "-"], "--json '-' would be a file named '-' (no output is written to "
                                                  "standard output); name the file to write"),
    ("models-json-dash", ["models", "--json", "-"], "--json '-' would be a file named '-'"),
    ("models-empty-pattern", ["models", ""], "no model matches '';"),  # it said '*', which lists them all
    ("models-timm-without-prefix", ["models", "--family", "timm", "res*"],
     "no model matches res* in family timm; timm's names start with 'timm:', try 'timm:res*'"),
    ("models-other-prefix-in-family", ["models", "--family", "timm", "hf:*"],
     "'hf:' names are in family hf: use --family hf, or leave it out"),
    ("graph-prefix-misspelt", ["graph", "--model", "tim:resnet18"], "did you mean 'timm:resnet18'?"),
    ("graph-prefix-upper-case", ["graph", "--model", "HF:ResNetConfig"], "did you mean 'hf:ResNetConfig'?"),
    ("build-engine-run-empty", ["build-engine", "--run", "", "--out", "{tmp}/engine"], "--run '' is empty"),
    ("graph-unknown-model", ["graph", "--model", "resnet5"], "unknown model"),
    ("graph-resolution-zero", ["graph", "--resolution", "0"], "--resolution"),
    ("graph-num-classes-zero", ["graph", "--num-classes", "0"], "--num-classes"),
    ("graph-unknown-tracer", ["graph", "--tracer", "jit"], "--tracer"),
    ("graph-checkpoint-corrupt", ["graph", "--checkpoint", "{text.pt}"], "is not a torch checkpoint (torch.load cannot read it)"),
    # --- report
    ("report-out-unwritable", ["report", "{not-a-run}", "--out", "/sys/rep"], "--out '/sys/rep' is not writable"),
    ("report-out-is-a-file", ["report", "{not-a-run}", "--out", "{a-file}"], "is a file"),
    ("report-folder-missing", ["report", "/nonexistent", "--out", "{tmp}/rep"], "'/nonexistent' does not exist"),
    # --- demo
    ("demo-out-unwritable", ["demo", "--out", UNWRITABLE], "is not writable"),
    ("demo-out-holds-a-run", ["demo", "--out", "{finished-run}"], "holds run.json, the output of another command"),
    ("demo-out-holds-an-engine", ["demo", "--out", "{engine-folder}"], "holds engine.json, the output of another command"),
    # --- commands owned by the runtime layer: what already holds there
    ("build-engine-run-stopped-early", ["build-engine", "--run", "{other-run}", "--out", "{tmp}/engine"],
     "other-run' stopped before it wrote run.json; finish it: run the same `iee-deploy train` again with `resume`"),
    ("report-run-stopped-early", ["report", "{other-run}", "--out", "{tmp}/rep"], "stopped before it wrote run.json"),
    ("build-engine-not-a-run", ["build-engine", "--run", "{not-a-run}", "--out", "{tmp}/engine"], "not a run folder"),
    # --- the group itself
    ("unknown-command", ["trian"], "trian"),
]


def _argv(argv: list[str], files: dict[str, str], tmp: Path) -> list[str]:
    names = {"tmp": str(tmp), **files}
    out = []
    for arg in argv:
        for name, path in names.items():
            arg = arg.replace("{" + name + "}", path)
        out.append(arg)
    return out


def invoke(argv: list[str]) -> tuple[int, str, BaseException | None]:
    """Run the CLI in-process: (exit code, stderr, exception if one escaped)."""
    result = CliRunner().invoke(main, argv, prog_name="iee-deploy")
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.stderr, escaped


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_a_non_zero_exit(argv, fragment, files, tmp_path):
    start = time.perf_counter()
    code, stderr, escaped = invoke(_argv(argv, files, tmp_path))
    assert escaped is None, f"{type(escaped).__name__}: {escaped}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code != 0
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert fragment in lines[0], lines[0]
    assert lines[0].startswith("error: "), lines[0]
    assert time.perf_counter() - start < 60, "the error must come before long work"  # generous on a busy 2-core box
    assert not (tmp_path / "config.json").exists(), "a refused run must leave no run folder behind"


def test_the_real_command_line_prints_one_line(tmp_path):
    assert_user_error(run_cli("train", "--lr", "nan", "--out", str(tmp_path / "run")), "--lr nan")
    assert_user_error(run_cli("graph", "--json", "/sys/g.json"), "--json", "not writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only folder")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    code, stderr, _ = invoke(["train", "--out", str(folder / "run")])
    assert code != 0 and "is not writable" in stderr


@pytest.mark.parametrize("name", list(LAZY_COMMANDS))
def test_numeric_options_use_click_ranges(name):
    """Every int or float option states its range (click checks it and --help shows it); a seed is any int."""
    command = main.get_command(click.Context(main), name)
    plain = [p.opts[0] for p in command.params
             if type(p.type) in (click.types.IntParamType, click.types.FloatParamType) and p.name != "seed"]
    assert not plain, f"{name}: {plain} take any number; give them a click.IntRange / FloatRange"


# --- the library side: configs name fields, the CLI maps them -----------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"sparsity": 1.0}, "sparsity"), ({"sparsity": float("nan")}, "sparsity"), ({"omega0": -0.1}, "omega0"),
    ({"update_end": 0.0}, "update_end"), ({"descent": 1.0}, "descent"), ({"distribution": "normal"}, "distribution"),
    ({"omega_decay": "linear"}, "omega_decay"), ({"grow_init": "ones"}, "grow_init"), ({"start": "middle"}, "start"),
    ({"nm": "2-4"}, "nm"), ({"nm": "2:4"}, "sparsity"), ({"nm": "2:4", "sparsity": 0.5, "distribution": "global"}, "nm"),
    ({"hjq": (1, 1)}, "hjq"), ({"hjq": "150,150,150"}, "hjq"), ({"hjq": "1,2"}, "hjq"), ({"hjq": 150}, "hjq"),
    ({"hjq": (1.5, 2, 3)}, "hjq"), ({"delta_t": 0}, "delta_t"), ({"latency_ms": float("inf")}, "latency_ms"),
    ({"latency_ratio": 0.0}, "latency_ratio"), ({"latency_ms": 1.0, "latency_ratio": 0.5}, "latency_ms"),
    ({"sparsity": "0.9"}, "sparsity"), ({"omega0": True}, "omega0"), ({"latency_ms": "5"}, "latency_ms"),
])
def test_sparsity_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        SparsityConfig(**kwargs)
    assert err.value.field == field
    assert "--" not in str(err.value) and f"`{field}`" in str(err.value)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"lr": float("nan")}, "lr"), ({"lr": -0.1}, "lr"), ({"resolution": 0}, "resolution"), ({"num_classes": 0}, "num_classes"),
    ({"workers": -1}, "workers"), ({"epochs": 0}, "epochs"), ({"momentum": 1.0}, "momentum"), ({"device": "tpu"}, "device"),
    ({"batch_size": 0}, "batch_size"), ({"weight_decay": float("nan")}, "weight_decay"),
    ({"epochs": 2.0, "warmup_epochs": 2.0}, "warmup_epochs"), ({"lr": "0.1"}, "lr"),
    ({"batch_size": 2.5}, "batch_size"), ({"subset": "64"}, "subset"), ({"sparsity": "rigl"}, "sparsity"),
])
def test_train_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**kwargs)
    assert err.value.field == field


def test_configs_take_enums_and_their_json_strings():
    config = SparsityConfig(distribution="uniform", omega_decay="exponential", nm=" 2:4".strip(), sparsity=0.5)
    assert config.distribution.value == "uniform" and config.pattern is not None and config.pattern.m == 4
    stored = TrainConfig(sparsity=config).to_json()
    assert stored["sparsity"]["distribution"] == "uniform" and stored["sparsity"]["omega_decay"] == "exponential"
    assert TrainConfig(**stored) == TrainConfig(sparsity=config)  # config.json reads back into equal configs


def test_errors_render_fields_as_the_commands_flags():
    from iee_deploy.cli.train import train

    err = UserError("`freeze` is off but `init_checkpoint` is missing and `lr` is nan", "fix `lr`",
                    fields=("freeze", "init_checkpoint", "lr"))
    assert str(err) == "`freeze` is off but `init_checkpoint` is missing and `lr` is nan; fix `lr`"
    assert err.render(lambda f: flag_of(train, f)) == "--no-freeze is off but --checkpoint is missing and --lr is nan; fix --lr"
    assert flag_of(train, "not_an_option") == "not_an_option"  # never a flag the command lacks
    assert UserError("see `iee-deploy train`").render(lambda f: "--" + f) == "see `iee-deploy train`"  # only listed fields


def test_a_noisy_lut_names_profiles_flags_in_the_cli():
    from iee_deploy.cli import cli_flag
    from iee_deploy.cli.train import train
    from iee_deploy.structured.budget import resolve_budget

    with pytest.raises(UserError) as caught:  # the LUT predicts nothing faster than dense
        resolve_budget(None, 0.97, dense_ms=0.08, smallest_ms=0.085)
    assert str(caught.value).endswith("and more `repeats` (or a larger `batch`)")  # library form
    # train has no --repeats: it was "more `repeats`" on the command line; profile's flags are meant
    assert caught.value.render(lambda f: cli_flag(train, f)).endswith("`iee-deploy profile` and more --repeats (or a "
                                                                        "larger --batch)")


def test_minimum_resolution_is_the_total_stride():
    assert minimum_resolution("resnet20", 32) == 4  # two stride-2 stages
    assert minimum_resolution("mobilenet_v1", 224) == 32
    # squeeze-excitation's convs run on a pooled 1x1 vector: they say nothing of the stride (it was 128 here)
    assert minimum_resolution("mobilenet_v3_small", 96) == 32


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "deeper", "out", folder=True) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # the check makes no folders
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder") as err:
        check_writable(tmp_path / "f", "out", folder=True)
    assert err.value.field == "out"
    with pytest.raises(UserError, match="is a folder, not a file"):
        check_writable(tmp_path, "json_path")
    with pytest.raises(UserError, match="not writable"):
        check_writable("/proc/x/x.csv", "out")
    for folder in (True, False):  # Path('') would be the current folder
        with pytest.raises(UserError, match="'' is empty; name the"):
            check_writable("", "out", folder=folder)


def test_interrupt_suggests_resume_only_where_the_command_has_it(monkeypatch, tmp_path):
    import iee_deploy.deploy.report as report
    from iee_deploy.train import Trainer

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", stop)
    code, stderr, _ = invoke(["report", str(tmp_path), "--out", str(tmp_path / "rep")])
    assert code == 130 and "--resume" not in stderr and "run the same command again" in stderr
    monkeypatch.setattr(Trainer, "fit", stop)
    code, stderr, _ = invoke(["train", "--subset", "64", "--out", str(tmp_path / "run")])
    assert code == 130 and "with --resume to continue" in stderr
    within = CliRunner().invoke(main, ["train", "--subset", "64", "--out", str(tmp_path / "run2")],
                                obj={"within": "iee-deploy demo"})  # as the demo runs its steps
    assert within.exit_code == 130 and "run `iee-deploy demo` again" in within.stderr and "--resume" not in within.stderr


def test_check_fraction_and_check_positive_bounds():
    from iee_deploy.errors import check_fraction, check_positive

    assert check_fraction("f", 0.0) == 0.0 and check_fraction("f", 1.0) == 1.0
    for value, kwargs in [(0.0, {"low_open": True}), (1.0, {"high_open": True}), (-1e-9, {}), (1 + 1e-9, {}),
                          (float("nan"), {})]:
        with pytest.raises(ConfigError, match="is not a fraction in"):
            check_fraction("f", value, **kwargs)
    assert check_positive("x", 0.0, zero_ok=True) == 0.0
    for value in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="`x`"):
            check_positive("x", value)


def test_a_diverged_run_is_not_a_finished_run(tmp_path):
    """A NaN loss stops training with one error line naming the step and the likely cause; the run is not
    marked finished and reports no top-1 (progress lines may come before the error: training had started)."""
    code, stderr, escaped = invoke(["train", "--lr", "1e6", "--resolution", "8", "--subset", "256", "--batch-size", "32",
                                    "--epochs", "3", "--method", "static", "--out", str(tmp_path / "run")])
    assert escaped is None and code != 0
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged at step ") and "the loss is nan" in last, last
    assert "train again into a new --out with a lower --lr (now 1e+06)" in last, last  # --resume would repeat --lr 1e6
    assert not (tmp_path / "run" / "summary.json").exists()
    import json

    assert not json.loads((tmp_path / "run" / "run.json").read_text()).get("finished")



def test_a_run_refused_at_its_first_step_leaves_no_folder(tmp_path):
    """Refused before any optimizer step (a batch of one for BatchNorm): the folder it made is removed; a folder
    that was there before is left as it was."""
    argv = ["train", "--resolution", "4", "--subset", "64", "--batch-size", "1", "--method", "static", "--sparsity",
            "0.5", "--out"]
    code, stderr, _ = invoke([*argv, str(tmp_path / "run")])
    assert code != 0 and "too small for the model's BatchNorm layers" in stderr
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, _ = invoke([*argv, str(tmp_path / "mine")])
    assert code != 0 and (tmp_path / "mine" / "notes.txt").read_text() == "keep"

def test_subsets_larger_than_their_split_are_named():
    from iee_deploy.train.trainer import subset_shortfall

    held = {"training": 1438, "validation": 359}
    assert subset_shortfall({"training": 100, "validation": None}, held, "digits") == []
    assert subset_shortfall({"training": 1438, "validation": 359}, held, "digits") == []
    assert subset_shortfall({"training": 5000, "validation": 400}, held, "digits") == [
        "warning: 5000 training images asked for, but digits holds 1438; using all 1438",
        "warning: 400 validation images asked for, but digits holds 359; using all 359"]


def _small_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))


def test_sparsifier_names_a_bad_seed():
    from iee_deploy.sparsifier import Sparsifier

    model = _small_net()
    for seed in (-1, 2**64, 1.5, True):
        with pytest.raises(UserError, match="`seed` must be a whole number") as err:
            Sparsifier(model, torch.optim.SGD(model.parameters(), lr=0.1), 10, method="static", seed=seed)
        assert err.value.field == "seed"


@pytest.mark.parametrize("method", ["rigl", "iee-structured"])
def test_a_diverged_user_loop_is_refused_at_the_structure_update(method, files, one_thread):
    """NaN gradients in the user's own loop: the structure update that would rank NaN scores stops with one
    UserError (unstructured: the scores; structured: no step since the last update had finite gradients)."""
    from iee_deploy.models import build_model
    from iee_deploy.sparsifier import Sparsifier

    torch.manual_seed(0)
    if method == "rigl":
        model, kwargs = _small_net(), {"method": "rigl", "delta_t": 2}
    else:
        model, kwargs = build_model("resnet20", 10, 8), {"method": "iee", "latency_ratio": 0.5, "lut": files["lut.csv"],
                                                          "hjq": (1, 1, 1), "update_end": 0.9}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = Sparsifier(model, optimizer, 12, resolution=8, **kwargs)
    with pytest.raises(UserError, match="training diverged"):
        for _ in range(12):
            with sparsifier.step(2):
                optimizer.zero_grad()
                (model(torch.randn(2, 3, 8, 8)).sum() * float("nan")).backward()
                optimizer.step()


def test_validate_lut_of_one_sub_network_prints_no_nan(files, tmp_path):
    """One sub-network has no rank correlation: the line says so and the JSON holds null, never 'nan' / NaN."""
    out = tmp_path / "v.json"
    result = CliRunner().invoke(main, ["validate-lut", "--lut", files["lut.csv"], "--resolution", "8", "--num-classes", "10",
                                       "--samples", "1", "--json", str(out)], prog_name="iee-deploy")
    assert result.exit_code == 0, result.output
    assert "Spearman undefined" in result.stdout and "nan" not in result.stdout.lower()
    assert json.loads(out.read_text())["spearman"] is None and "NaN" not in out.read_text()


def test_report_outputs_know_the_files_of_an_engine_and_leave_others_alone(tmp_path):
    from iee_deploy.outputs import check_report_output, owner_of

    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "engine.json").write_text("{}")
    (engine / "validation.json").write_text("{}")
    (tmp_path / "mine.json").write_text("{}")
    assert owner_of(engine / "validation.json") == f"the engine '{engine}'"
    assert owner_of(tmp_path / "mine.json") is None and owner_of(tmp_path / "new.json") is None
    assert check_report_output(tmp_path / "mine.json", "json_path") == tmp_path / "mine.json"  # a report of one's own
    with pytest.raises(UserError, match="is a file of the engine"):
        check_report_output(engine / "validation.json", "json_path")
