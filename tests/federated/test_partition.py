"""Partitions: whole patients per client, reproducible with the seed, each scheme's own property."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclass.data.dataset import Dataset, Split
from medclass.errors import ConfigError, DataError
from medclass.federated.partition import (
    PartitionSpec,
    all_rows,
    apply_shift,
    assign_clients,
    client_dataset,
    parse_partition,
    shift_params,
)


def _rows(n_patients: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-4 images per patient, one label per patient (30% positive)."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 5, n_patients)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], per)
    labels = np.repeat((rng.random(n_patients) < 0.3).astype(np.float32), per)
    return labels, groups


@pytest.mark.parametrize("text", ["iid", "dirichlet:0.3", "quantity:0.5", "shift"])
def test_patients_never_split_and_seed_reproducible(text: str) -> None:
    labels, groups = _rows()
    spec = parse_partition(text)
    a = assign_clients(labels, 5, spec, seed=3, groups=groups)
    for g in np.unique(groups):
        assert len(np.unique(a[groups == g])) == 1, g
    assert np.array_equal(a, assign_clients(labels, 5, spec, seed=3, groups=groups))
    assert not np.array_equal(a, assign_clients(labels, 5, spec, seed=4, groups=groups))
    assert set(np.unique(a)) == set(range(5))


def test_iid_equal_shares_and_label_mix() -> None:
    labels = (np.arange(1000) % 4 == 0).astype(np.float32)  # 25% positive, no patients
    a = assign_clients(labels, 4, parse_partition("iid"), seed=0)
    assert np.bincount(a).tolist() == [250] * 4
    for k in range(4):
        assert abs(labels[a == k].mean() - 0.25) < 0.08


def test_dirichlet_small_alpha_skews_labels_more_than_iid() -> None:
    labels = (np.arange(2000) % 2).astype(np.float32)

    def spread(text: str) -> float:
        a = assign_clients(labels, 5, parse_partition(text), seed=1)
        return float(np.std([labels[a == k].mean() for k in range(5)]))

    assert spread("dirichlet:0.1") > 0.2 > 0.05 > spread("iid")
    assert spread("dirichlet:100") < 0.05  # large alpha tends to iid


def test_quantity_skews_sizes_not_labels() -> None:
    labels = (np.arange(3000) % 2).astype(np.float32)
    a = assign_clients(labels, 5, parse_partition("quantity:0.5"), seed=2)
    sizes = np.bincount(a, minlength=5)
    assert sizes.max() > 2 * sizes.min()
    assert max(abs(labels[a == k].mean() - 0.5) for k in range(5)) < 0.1


def test_column_sites_and_patient_at_two_sites() -> None:
    labels = np.zeros(6, dtype=np.float32)
    groups = np.array(["a", "a", "b", "c", "c", "d"])
    sites = np.array(["H2", "H2", "H1", "H3", "H3", "H1"])
    a = assign_clients(labels, 0, parse_partition("column:site"), seed=0, groups=groups, sites=sites)
    assert a.tolist() == [1, 1, 0, 2, 2, 0]
    with pytest.raises(ConfigError, match="names 3 sites"):
        assign_clients(labels, 2, parse_partition("column:site"), seed=0, groups=groups, sites=sites)
    sites[1] = "H1"
    with pytest.raises(DataError, match="two sites"):
        assign_clients(labels, 0, parse_partition("column:site"), seed=0, groups=groups, sites=sites)


@pytest.mark.parametrize("bad", ["dirichlet", "dirichlet:-1", "quantity:x", "zipf", "column:", "iid:3"])
def test_bad_specs_are_one_line_errors(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_partition(bad)
    assert "\n" not in str(err.value) and "--partition" in str(err.value)


def test_parse_round_trip() -> None:
    assert parse_partition("Dirichlet:0.30") == PartitionSpec("dirichlet", alpha=0.3)
    assert str(parse_partition("column:site")) == "column:site"


def test_shift_is_fixed_per_client_and_identity_for_client_0() -> None:
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(apply_shift(x, shift_params(0, 0)), x)
    p = shift_params(2, 0)
    assert p == shift_params(2, 0) and p != shift_params(3, 0)
    y = apply_shift(x, p)
    ref = np.clip(np.round(255 * (np.arange(256) / 255) ** p["gamma"] * p["gain"] + p["offset"]), 0, 255)
    assert np.abs(y.numpy().reshape(-1).astype(float) - ref).max() <= 1  # float32 vs float64 rounding


def test_client_dataset_splits_follow_the_assignment() -> None:
    rng = np.random.default_rng(0)

    def split(n: int, tag: str) -> Split:
        return Split(
            torch.from_numpy(rng.integers(0, 255, (n, 1, 4, 4), dtype=np.uint8)),
            (np.arange(n) % 2).astype(np.float32),
            np.array([f"{tag}{i // 2}" for i in range(n)], dtype=object),
        )

    ds = Dataset("toy", "binary", ["a", "b"], {"train": split(40, "t"), "val": split(10, "v"), "test": split(20, "s")})
    labels, groups, sites, spans = all_rows(ds)
    assert len(labels) == 70 and sites is None and spans == [("train", 40), ("val", 10), ("test", 20)]
    a = assign_clients(labels, 3, parse_partition("iid"), seed=0, groups=groups, min_rows=1)
    parts = [client_dataset(ds, a, k) for k in range(3)]
    for name, n in spans:
        assert sum(len(p.splits[name]) for p in parts) == n
    test_ids = np.concatenate([p.splits["test"].patient_ids for p in parts])
    assert sorted(test_ids) == sorted(ds.splits["test"].patient_ids)
    shifted = client_dataset(ds, a, 1, shift=shift_params(1, 0))
    assert not torch.equal(shifted.splits["train"].images, parts[1].splits["train"].images)


def test_column_partition_of_a_manifest_gives_one_client_per_site(tmp_path, clinical_manifest) -> None:
    from medclass.data.sources import load_dataset
    from medclass.federated.client import ClientSource, load_site

    manifest = clinical_manifest(tmp_path, n=60)
    full = load_dataset(str(manifest), tabular=["sex"])
    plan = {"recipe": "default", "batch_size": 16, "image_size": 16}
    sites = [load_site(ClientSource(str(manifest), "column:sex", 0, k, 0), plan) for k in range(2)]
    for name, split in full.splits.items():
        sex = split.tabular.columns["sex"].astype(str)
        assert [len(s.dataset.splits[name]) for s in sites] == [int((sex == "f").sum()), int((sex == "m").sum())]
        assert all(s.dataset.splits[name].tabular is None for s in sites)  # the site is not a model input
    assert "tabular" not in sites[0].meta["preprocessing"]
