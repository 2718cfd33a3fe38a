"""The training data are named by dataset name and content hash: no file-system path in model.json or the card."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from medclass import checkpoint
from medclass.config import RunConfig
from medclass.data.dataset import Dataset, Split
from medclass.models import build_model
from medclass.predict import Predictor
from medclass.training.loop import model_meta

PRIVATE = "/home/dr-someone/patients/chest-folder"


def _dataset(md5: str | None = None, *, label_flip: int | None = None, pixel_flip: int | None = None) -> Dataset:
    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 8), ("val", 4), ("test", 4)):
        images = rng.integers(0, 256, (n, 1, 16, 16), dtype=np.uint8)
        labels = (np.arange(n) % 2).astype(np.float32)
        if name == "train" and label_flip is not None:
            labels[label_flip] = 1 - labels[label_flip]
        if name == "test" and pixel_flip is not None:
            images[0, 0, 0, pixel_flip] ^= 1
        splits[name] = Split(torch.from_numpy(images), labels)
    return Dataset("chest-folder", "binary", ["normal", "effusion"], splits, source=PRIVATE, md5=md5)


def _run(tmp_path, data: Dataset, **override):
    meta = model_meta(RunConfig(), data)
    meta.update(override)
    run = tmp_path / "run"
    checkpoint.save_model(run, build_model(meta["architecture"]), meta)
    return run


def test_model_json_names_the_data_by_name_and_content_hash():
    npz = model_meta(RunConfig(), _dataset(md5="0" * 32))["dataset"]
    assert npz == {"name": "chest-folder", "md5": "0" * 32}  # the .npz file's MD5, as the catalog lists it
    folder = model_meta(RunConfig(), _dataset())["dataset"]
    assert set(folder) == {"name", "sha256"} and re.fullmatch(r"[0-9a-f]{64}", folder["sha256"])
    assert _dataset().content_sha256() == folder["sha256"]  # the same content, a new object: the same hash
    assert _dataset(label_flip=3).content_sha256() != folder["sha256"]
    assert _dataset(pixel_flip=5).content_sha256() != folder["sha256"]
    assert PRIVATE not in json.dumps(model_meta(RunConfig(), _dataset()))


def test_model_card_shows_no_path(tmp_path):
    from fastapi.testclient import TestClient

    from medclass.serve.app import create_app

    run = _run(tmp_path, _dataset())
    assert "source" not in json.loads((run / "model.json").read_text())["dataset"]
    res = TestClient(create_app(Predictor.from_checkpoint(run), run_dir=run)).get("/v1/model")
    assert res.status_code == 200
    card = res.json()
    assert card["training_data"] == {"name": "chest-folder", "sha256": _dataset().content_sha256()}
    assert PRIVATE not in res.text and str(tmp_path) not in res.text


def test_old_checkpoints_load_and_their_data_path_is_not_published(tmp_path):
    from fastapi.testclient import TestClient

    from medclass.serve.app import create_app

    old = {"name": "breastmnist", "source": "/home/dr-someone/.cache/medclass/breastmnist.npz", "md5": "ab" * 16}
    run = _run(tmp_path, _dataset(), dataset=old)  # model.json as medclass wrote it before
    predictor = Predictor.from_checkpoint(run)
    assert predictor.meta["dataset"]["source"] == old["source"]  # loads as it is
    res = TestClient(create_app(predictor, run_dir=run)).get("/v1/model")
    assert res.json()["training_data"] == {"name": "breastmnist", "md5": "ab" * 16}
    assert "dr-someone" not in res.text


@pytest.mark.parametrize("dataset", [None, "breastmnist", {"source": "/x/y.npz"}])
def test_card_training_data_of_odd_entries(dataset):
    from medclass.serve.app import training_data

    assert training_data(dataset) == (None if not isinstance(dataset, dict) else {})
