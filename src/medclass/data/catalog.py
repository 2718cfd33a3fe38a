"""Catalog of the MedMNIST v2 datasets: tasks, labels, split sizes and official download files.

The facts (URLs, MD5 checksums, label names, split sizes, licences) follow MedMNIST's own
``medmnist/info.py`` as shipped in ``medmnist==3.0.2``, whose files live in Zenodo record 10519652.
MedMNIST v2 is described in Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D
and 3D biomedical image classification", Scientific Data 10, 41 (2023). Each dataset keeps the
licence of its source; cite both MedMNIST and the source when you use one.

Example:
    >>> info = get_info("PneumoniaMNIST")
    >>> info.task, info.num_classes, info.file(64).filename
    ('binary', 2, 'pneumoniamnist_64.npz')
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from medclass.errors import DataError

__all__ = [
    "CATALOG",
    "TASKS",
    "ZENODO_RECORD",
    "DatasetFile",
    "DatasetInfo",
    "get_info",
    "match_file",
    "parse_spec",
]

TASKS = ("binary", "multiclass", "multilabel", "ordinal")
"""Task types, normalised from MedMNIST's "binary-class", "multi-class", "multi-label, binary-class"
and "ordinal-regression"."""

ZENODO_RECORD = "https://zenodo.org/records/10519652"
"""Zenodo record that hosts the official MedMNIST v2 ``.npz`` files."""

_SIZES_2D = (28, 64, 128, 224)
_SIZES_3D = (28, 64)
_ORGANS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)
_CC_BY = "CC BY 4.0"


@dataclass(frozen=True)
class DatasetFile:
    """One official ``.npz`` file of a dataset at one image size.

    Attributes:
        size: Image side length in pixels (voxels for 3D): 28, 64, 128 or 224.
        url: Official download URL.
        md5: Expected MD5 checksum of the file, as lowercase hex.
    """

    size: int
    url: str
    md5: str

    @property
    def filename(self) -> str:
        """The file name, taken from the URL: ``"pneumoniamnist.npz"`` or ``"pneumoniamnist_64.npz"``."""
        return self.url.split("?", 1)[0].rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one MedMNIST dataset.

    Attributes:
        name: Lowercase catalog name, e.g. ``"pneumoniamnist"``.
        task: One of :data:`TASKS`.
        ndim: Number of spatial dimensions, 2 or 3.
        channels: Number of image channels (1 or 3).
        label_names: Class (or, for multilabel, finding) names ordered by class index.
        n_samples: Number of samples per split: ``{"train": ..., "val": ..., "test": ...}``.
        license: Licence of the data, e.g. ``"CC BY 4.0"``.
        source: Short credit line naming the source data.
        files: Official files by image size.
        positive_class: Binary tasks: the class that is the finding (sensitivity, operating point,
            referral and triage are about it); ``None`` for other tasks.
    """

    name: str
    task: str
    ndim: int
    channels: int
    label_names: tuple[str, ...]
    n_samples: dict[str, int] = field(hash=False)
    license: str
    source: str
    files: dict[int, DatasetFile] = field(hash=False, repr=False)
    positive_class: str | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (number of labels for a multilabel task)."""
        return len(self.label_names)

    @property
    def modality(self) -> str:
        """Imaging modality (``xray``, ``ct``, ``ultrasound``, ...), which recipes can specialise for."""
        return MODALITIES[self.name]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Available image sizes, smallest first."""
        return tuple(sorted(self.files))

    def file(self, size: int = 28) -> DatasetFile:
        """Return the official file for an image size.

        Args:
            size: Image side length in pixels.

        Returns:
            The file entry.

        Raises:
            DataError: If the dataset has no file of that size.
        """
        try:
            return self.files[size]
        except (KeyError, TypeError):
            sizes = ", ".join(str(s) for s in self.sizes)
            raise DataError(f"{self.name}: no {size} px file; available sizes: {sizes}") from None


# The imaging modality of each dataset: the key of a recipe's ``per_modality`` sections.
MODALITIES: dict[str, str] = {
    "pathmnist": "pathology",
    "chestmnist": "xray",
    "dermamnist": "dermatoscopy",
    "octmnist": "oct",
    "pneumoniamnist": "xray",
    "retinamnist": "fundus",
    "breastmnist": "ultrasound",
    "bloodmnist": "microscopy",
    "tissuemnist": "microscopy",
    "organamnist": "ct",
    "organcmnist": "ct",
    "organsmnist": "ct",
    "organmnist3d": "ct",
    "nodulemnist3d": "ct",
    "adrenalmnist3d": "ct",
    "fracturemnist3d": "ct",
    "vesselmnist3d": "mra",
    "synapsemnist3d": "electron_microscopy",
}


def _make(
    name: str,
    task: str,
    channels: int,
    labels: tuple[str, ...],
    splits: tuple[int, int, int],
    md5s: tuple[str, ...],
    source: str,
    license: str = _CC_BY,
    positive: str | None = None,
) -> DatasetInfo:
    """Build a catalog entry; 3D datasets are those whose name ends in ``3d``; ``positive`` names a binary finding."""
    ndim = 3 if name.endswith("3d") else 2
    sizes = _SIZES_3D if ndim == 3 else _SIZES_2D
    if len(md5s) != len(sizes) or task not in TASKS or (task == "binary") != (positive in labels):
        raise AssertionError(f"bad catalog entry {name!r}")  # a bug in this table, caught at import
    files = {}
    for size, md5 in zip(sizes, md5s):
        stem = name if size == 28 else f"{name}_{size}"
        files[size] = DatasetFile(size, f"{ZENODO_RECORD}/files/{stem}.npz?download=1", md5)
    train, val, test = splits
    return DatasetInfo(
        name=name,
        task=task,
        ndim=ndim,
        channels=channels,
        label_names=labels,
        n_samples={"train": train, "val": val, "test": test},
        license=license,
        source=source,
        files=files,
        positive_class=positive,
    )


_ENTRIES = (
    # ----- 2D -----
    _make(
        "pathmnist",
        "multiclass",
        3,
        (
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        (89996, 10004, 7180),
        (
            "a8b06965200029087d5bd730944a56c1",
            "55aa9c1e0525abe5a6b9d8343a507616",
            "ac42d08fb904d92c244187169d1fd1d9",
            "2c51a510bcdc9cf8ddb2af93af1eadec",
        ),
        "Colorectal cancer histology patches NCT-CRC-HE-100K / CRC-VAL-HE-7K (Kather et al.), via MedMNIST v2",
    ),
    _make(
        "chestmnist",
        "multilabel",
        1,
        (
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ),
        (78468, 11219, 22433),
        (
            "02c8a6516a18b556561a56cbdd36c4a8",
            "9de6cd0b934ebb5b7426cfba5efbae16",
            "db107e5590b27930b62dbaf558aebee3",
            "45bd33e6f06c3e8cdb481c74a89152aa",
        ),
        "Frontal chest X-rays from NIH ChestX-ray14 (Wang et al.), via MedMNIST v2",
    ),
    _make(
        "dermamnist",
        "multiclass",
        3,
        (
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        (7007, 1003, 2005),
        (
            "0744692d530f8e62ec473284d019b0c7",
            "b70a2f5635c6199aeaa28c31d7202e1f",
            "2defd784463fa5243564e855ed717de1",
            "8974907d8e169bef5f5b96bc506ae45d",
        ),
        "Dermatoscopic images of pigmented skin lesions from HAM10000 (Tschandl et al.), via MedMNIST v2",
        license="CC BY-NC 4.0",
    ),
    _make(
        "octmnist",
        "multiclass",
        1,
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        (97477, 10832, 1000),
        (
            "c68d92d5b585d8d81f7112f81e2d0842",
            "e229e9440236b774d9f0dfef9d07bdaf",
            "0a97e76651ace45c5d943ee3f65b63ae",
            "abc493b6d529d5de7569faaef2773ba3",
        ),
        "Retinal optical coherence tomography images (Kermany et al.), via MedMNIST v2",
    ),
    _make(
        "pneumoniamnist",
        "binary",
        1,
        ("normal", "pneumonia"),
        (4708, 524, 624),
        (
            "28209eda62fecd6e6a2d98b1501bb15f",
            "8f4eceb4ccffa70c672198ea285246c6",
            "05b46931834c231683c68f40c47b2971",
            "d6a3c71de1b945ea11211b03746c1fe1",
        ),
        "Paediatric chest X-rays, pneumonia vs normal (Kermany et al.), via MedMNIST v2",
        positive="pneumonia",
    ),
    _make(
        "retinamnist",
        "ordinal",
        3,
        ("0", "1", "2", "3", "4"),
        (1080, 120, 400),
        (
            "bd4c0672f1bba3e3a89f0e4e876791e4",
            "afda852cc34dcda56f86ad2b2457dbcc",
            "e48e916a24454daf90583d4e6efb1a18",
            "eae7e3b6f3fcbda4ae613ebdcbe35348",
        ),
        "Retina fundus images graded for diabetic retinopathy, DeepDRiD challenge, via MedMNIST v2",
    ),
    _make(
        "breastmnist",
        "binary",
        1,
        ("malignant", "normal, benign"),
        (546, 78, 156),
        (
            "750601b1f35ba3300ea97c75c52ff8f6",
            "742edef2a1fd1524b2efff4bd7ba9364",
            "363e4b3f8d712e9b5de15470a2aaadf1",
            "b56378a6eefa9fed602bb16d192d4c8b",
        ),
        "Breast ultrasound images (Al-Dhabyani et al.), via MedMNIST v2",
        positive="malignant",  # label 0: the finding is not the second class
    ),
    _make(
        "bloodmnist",
        "multiclass",
        3,
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        (11959, 1712, 3421),
        (
            "7053d0359d879ad8a5505303e11de1dc",
            "2b94928a2ae4916078ca51e05b6b800b",
            "adace1e0ed228fccda1f39692059dd4c",
            "b718ff6835fcbdb22ba9eacccd7b2601",
        ),
        "Microscopy images of normal blood cells (Acevedo et al.), via MedMNIST v2",
    ),
    _make(
        "tissuemnist",
        "multiclass",
        1,
        (
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ),
        (165466, 23640, 47280),
        (
            "ebe78ee8b05294063de985d821c1c34b",
            "123ece2eba09d0aa5d698fda57103344",
            "61b955355d7425a89687b06cca3ce0c2",
            "b077128c4a949f0a4eb01517f9037b9c",
        ),
        "Human kidney cortex cells from BBBC051, Broad Bioimage Benchmark Collection, via MedMNIST v2",
    ),
    _make(
        "organamnist",
        "multiclass",
        1,
        _ORGANS,
        (34561, 6491, 17778),
        (
            "68e3f8846a6bd62f0c9bf841c0d9eacc",
            "2dcccc29b88e6da5a01161ef20cda288",
            "eeae80d0a227a8d099027e1b3cfd3b60",
            "50747347e05c87dd3aaf92c49f9f3170",
        ),
        "Axial slices of abdominal CT organs from LiTS (Bilic et al.), via MedMNIST v2",
    ),
    _make(
        "organcmnist",
        "multiclass",
        1,
        _ORGANS,
        (12975, 2392, 8216),
        (
            "b9ceb9546e10131b32923c5bbeaea2b1",
            "3ce34a8724ea6f548e6db4744d03b6a9",
            "773c1f009daa3fe5d9a2a201b2a7ed94",
            "050f5e875dc056f6768abf94ec9995d1",
        ),
        "Coronal slices of abdominal CT organs from LiTS (Bilic et al.), via MedMNIST v2",
    ),
    _make(
        "organsmnist",
        "multiclass",
        1,
        _ORGANS,
        (13932, 2452, 8827),
        (
            "9ab87b696fb54e2a387ebe992d6ed5f1",
            "53a6d115339d874c25e309a994ff46d3",
            "ded0c5fa01a95dc4978b956f613e9b8e",
            "b354719e553fbbb2513d5533f52a4cb1",
        ),
        "Sagittal slices of abdominal CT organs from LiTS (Bilic et al.), via MedMNIST v2",
    ),
    # ----- 3D -----
    _make(
        "organmnist3d",
        "multiclass",
        1,
        (
            "liver",
            "kidney-right",
            "kidney-left",
            "femur-right",
            "femur-left",
            "bladder",
            "heart",
            "lung-right",
            "lung-left",
            "spleen",
            "pancreas",
        ),
        (971, 161, 610),
        ("a0c5a1ff56af4f155c46d46fbb45a2fe", "58a2205adf14a9d0a189cb06dc78bf10"),
        "3D crops of abdominal CT organs from LiTS (Bilic et al.), via MedMNIST v2",
    ),
    _make(
        "nodulemnist3d",
        "binary",
        1,
        ("benign", "malignant"),
        (1158, 165, 310),
        ("8755a7e9e05a4d9ce80a24c3e7a256f3", "c47c5b7d457bf6332200d2ea6d64ecd8"),
        "Lung nodules in thoracic CT from LIDC-IDRI (Armato et al.), via MedMNIST v2",
        positive="malignant",
    ),
    _make(
        "adrenalmnist3d",
        "binary",
        1,
        ("normal", "hyperplasia"),
        (1188, 98, 298),
        ("bbd3c5a5576322bc4cdfea780653b1ce", "17721accfe9fb005146a47d33bc54b2f"),
        "Adrenal gland shape masks from abdominal CT, Zhongshan Hospital, Fudan University, via MedMNIST v2",
        positive="hyperplasia",
    ),
    _make(
        "fracturemnist3d",
        "multiclass",
        1,
        ("buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"),
        (1027, 103, 240),
        ("6aa7b0143a6b42da40027a9dda61302f", "f01d7e6316aedf4210da0da5b7437b42"),
        "Rib fractures in chest CT from the RibFrac dataset (Jin et al.), via MedMNIST v2",
    ),
    _make(
        "vesselmnist3d",
        "binary",
        1,
        ("vessel", "aneurysm"),
        (1335, 191, 382),
        ("b41fd4f7e7e2feedddb201585ecafa1b", "6bb274a8846e1097066dcd64e2c4520f"),
        "Brain vessel segments from MRA, IntrA intracranial aneurysm dataset (Yang et al.), via MedMNIST v2",
        positive="aneurysm",
    ),
    _make(
        "synapsemnist3d",
        "binary",
        1,
        ("inhibitory synapse", "excitatory synapse"),
        (1230, 177, 352),
        ("1235b78a3cd6280881dd7850a78eadb6", "43bd14ebf3af9d3dd072446fedc14d5e"),
        "Synapses in a rat brain electron microscopy volume (MitoEM), via MedMNIST v2",
        positive="excitatory synapse",  # no clinical finding: the second class, as before
    ),
)

CATALOG: dict[str, DatasetInfo] = {info.name: info for info in _ENTRIES}
"""All catalog datasets by name: the 12 2D datasets, then the 6 3D datasets."""

_BY_MD5: dict[str, tuple[DatasetInfo, int]] = {
    f.md5: (info, size) for info in _ENTRIES for size, f in info.files.items()
}
_FILENAME_RE = re.compile(r"^(?P<name>[a-z0-9]+?)(?:_(?P<size>\d+))?\.npz$")


def get_info(name: str) -> DatasetInfo:
    """Look up a dataset by name, ignoring case.

    Args:
        name: Catalog name, e.g. ``"pneumoniamnist"`` or ``"PneumoniaMNIST"``.

    Returns:
        The dataset's entry.

    Raises:
        DataError: If the name is not in the catalog; the message suggests a close match.
    """
    key = str(name).strip().lower()
    info = CATALOG.get(key)
    if info is not None:
        return info
    msg = f"unknown dataset {name!r}; known: {', '.join(CATALOG)}"
    close = difflib.get_close_matches(key, list(CATALOG), n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    raise DataError(msg)


def parse_spec(spec: str) -> tuple[DatasetInfo, int] | None:
    """Parse a ``name[@size]`` dataset spec such as ``"breastmnist@64"``.

    Args:
        spec: Dataset name, optionally followed by ``@`` and an image size. The name ignores case.

    Returns:
        ``(info, size)``, with size 28 when none is given; ``None`` if the name part is not a catalog name
        (so the caller can treat the spec as a path instead).

    Raises:
        DataError: If the name is a catalog name but the size is not a number or not available.
    """
    name, sep, size_text = str(spec).strip().partition("@")
    info = CATALOG.get(name.strip().lower())
    if info is None:
        return None
    if not sep:
        return info, 28
    size_text = size_text.strip()
    if not size_text.isdigit():
        sizes = ", ".join(str(s) for s in info.sizes)
        raise DataError(f"dataset spec {spec!r}: size must be one of {sizes}, got {size_text!r}")
    size = int(size_text)
    info.file(size)  # raises DataError listing the available sizes
    return info, size


def match_file(path: str | Path, md5: str | None = None) -> tuple[DatasetInfo, int] | None:
    """Identify an official catalog file by its MD5 or, failing that, by its file name.

    A matching name does not prove the contents are official: compare ``md5`` with
    ``info.file(size).md5`` when that matters.

    Args:
        path: Path (or bare name) of the file, e.g. ``"data/breastmnist_64.npz"``.
        md5: MD5 checksum of the file's contents, if known. It is tried first.

    Returns:
        ``(info, size)`` of the matching catalog file, or ``None`` if neither the checksum nor the name
        matches one.
    """
    if md5:
        hit = _BY_MD5.get(md5.strip().lower())
        if hit is not None:
            return hit
    m = _FILENAME_RE.match(Path(path).name.lower())
    if m is None:
        return None
    info = CATALOG.get(m["name"])
    if info is None:
        return None
    size = int(m["size"]) if m["size"] else 28
    if size not in info.files:
        return None
    return info, size
