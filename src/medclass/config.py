"""Run configuration: typed dataclasses, YAML recipes and overrides, saved with every run.

A run's configuration is built in layers, each overriding the one before:

1. the dataclass defaults below,
2. a recipe (``<name>.yaml``, shipped in the package's ``recipes`` folder, or a YAML path),
3. a user ``--config FILE``,
4. the values the user gives explicitly: command-line flags and ``--set section.key=value``
   (:func:`medclass.config_overrides.parse_set`), or keyword arguments of :func:`medclass.train`. An
   explicit ``train.epochs`` is the number of epochs trained (see :func:`build_config`).

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_type_hints

import yaml

from medclass.config_overrides import drop_none
from medclass.config_types import check_type
from medclass.errors import ConfigError


@dataclass
class DataConfig:
    """Where the data comes from and how it is shaped.

    Attributes:
        spec: A catalog name (``pneumoniamnist``, ``breastmnist@64``), an ``.npz`` path, a folder
            of class subfolders or a CSV manifest.
        image_size: Resize images to this side length (pixels/voxels); ``None`` keeps the native size.
        val_fraction: Validation share when the data has no split of its own.
        test_fraction: Test share when the data has no split of its own.
        split_seed: Seed of that split (kept apart from the training seed so runs share a split).
        window: Intensity window for DICOM files: ``None`` uses the file's own window (VOI LUT)
            when it has one, else the full range; or a preset (``ct_lung``, ``ct_mediastinum``,
            ``ct_bone``, ``ct_brain``, ``ct_abdomen``).
        frame: Frame of multi-frame files and volumes used for 2D training: ``middle`` or an index.
        max_pixels: Refuse any image with more pixels than this (decompression bombs); ``None``
            uses the reader's default limit.
        dedup: Keep byte-identical files once, before splitting (folders and manifests).
        equalize: Contrast preprocessing, stored in the checkpoint and applied at training,
            evaluation and prediction alike: ``none``, ``hist`` (global histogram equalisation)
            or ``clahe`` (contrast-limited adaptive equalisation with ``clahe_clip`` and
            ``clahe_tiles`` regions per side).
        modality: Imaging modality (``xray``, ``ct``, ``ultrasound``, ...) that selects the recipe's
            ``per_modality`` section; ``None`` takes it from the dataset catalog.
        label_column: Manifest column that holds the label (``None``: ``label``, else 0/1 label columns).
        group_column: Manifest column whose rows belong together (one patient, one lesion) and are kept
            in one split (``None``: ``patient_id``, else ``group_id`` when the manifest has one).
        positive_class: Name of the class that is the finding in a binary task (sensitivity, operating
            point, referral, triage); ``None`` takes the catalog's, else the second class.
        labels: Keep the labels of only this many training images (a number >= 1) or this share of them
            (below 1): a stratified subset drawn whole by patient; the rest of the training split is
            unlabelled (used by ``semi``, dropped otherwise). ``None`` keeps every label.
        label_seed: Seed of that draw (kept apart from the training seed, so methods share a subset).
        tabular: Manifest columns of clinical fields (age, sex, body site ...) given to the model beside each
            image (``--tabular age,sex``): encoded by a schema fitted on the training split and stored in the
            checkpoint (:mod:`medclass.data.tabular`); with ``model.fusion: none`` the run uses ``concat``.
        group_by: Manifest column naming the case each image belongs to (a lesion, study or patient): the
            images of one case get one prediction, the mean of their logits, and ``metrics.json`` reports
            case-level figures beside the image-level ones. Cases are kept whole in one split (it is the
            split's group column unless ``group_column`` names another).
        mmap: Folders and manifests: ``always`` decodes each split into a memory-mapped ``.npy`` in the cache and
            trains from it, so the set need not fit in memory; ``never`` holds it in memory; ``auto`` maps sets
            whose decoded pixels would exceed 1 GiB (``MEDCLASS_MMAP_BYTES``).
    """

    spec: str = "pneumoniamnist"
    image_size: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    window: str | None = None
    frame: str | int = "middle"
    max_pixels: int | None = None
    dedup: bool = True
    equalize: Literal["none", "hist", "clahe"] = "none"
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    modality: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    positive_class: str | None = None
    labels: float | None = None
    label_seed: int = 0
    tabular: list[str] = field(default_factory=list)
    group_by: str | None = None
    mmap: Literal["auto", "always", "never"] = "auto"

    def file_options(self) -> dict[str, Any]:
        """Keyword options for folder and manifest sources (:func:`medclass.data.sources.load_files`)."""
        opts = {"window": self.window, "frame": self.frame, "max_pixels": self.max_pixels, "dedup": self.dedup}
        if self.mmap != "auto":
            opts["mmap"] = self.mmap
        columns = ("label_column", "group_column", "group_by")
        opts.update({k: getattr(self, k) for k in columns if getattr(self, k)})
        if self.tabular:
            opts["tabular"] = list(self.tabular)
        return opts


@dataclass
class ModelConfig:
    """Which architecture to build (a registry name), its options and where its first weights come from.

    Attributes:
        name: Registry name or ``timm/<name>``.
        drop_rate: Dropout before the head.
        pretrained: Start from pretrained weights: ``weights``, else
            ``$MEDCLASS_WEIGHTS_DIR/<arch>.safetensors``, else timm's own download (online).
        weights: A local safetensors file of pretrained weights.
        init_from: A medclass run folder (or its ``model.safetensors``) to start from: every tensor
            that fits is copied, the head of a different task is not.
        freeze: ``none``; ``backbone`` to train only the classifier (a linear probe); or
            ``gradual`` (gradual unfreezing): the head alone first, then one more layer from the top
            every ``unfreeze_every`` epochs.
        unfreeze_every: Epochs between unfreezing steps with ``freeze: gradual``.
        truncate: Drop this many final stages of the backbone (a smaller model; 0 keeps all).
        norm: ``batch`` (the architecture's own normalisation) or ``group``: every BatchNorm becomes a GroupNorm
            (no batch statistics), as differential privacy needs; a run trained so initialises a private
            federation's every layer (``medclass federate --dp-epsilon ... --init-from RUN``).
        members: Architectures of a deep ensemble's members (``train.ensemble``), taken in turn;
            empty: every member is ``name``. A list and ``ensemble: 1`` train one member per entry.
            ``--model`` clears it.
        fusion: How clinical fields (``data.tabular``) join the image (:mod:`medclass.models.fusion`): ``concat``
            (pooled image features beside an MLP embedding of the fields, then the head), ``film`` (the fields
            scale and shift the image feature map's channels before pooling), ``late`` (image logits plus the
            fields' MLP logits), ``tabular_only`` (the fields alone: the baseline) or ``none`` (images only;
            ``concat`` when ``data.tabular`` names columns).
        modality_dropout: During training, the share of samples whose clinical fields are all replaced by
            "missing", so that the model also predicts well without them (off in evaluation).
    """

    name: str = "smallcnn"
    drop_rate: float = 0.0
    pretrained: bool = False
    weights: str | None = None
    init_from: str | None = None
    freeze: Literal["none", "backbone", "gradual"] = "none"
    unfreeze_every: float = 1.0
    truncate: int = 0
    norm: Literal["batch", "group"] = "batch"
    members: list[str] = field(default_factory=list)
    fusion: Literal["none", "concat", "film", "late", "tabular_only"] = "none"
    modality_dropout: float = 0.2


@dataclass
class OptimConfig:
    """Optimiser, schedule and loss options.

    Class imbalance: ``class_weight: balanced`` (inverse-frequency weights; ``class_weight_multiclass:
    false`` keeps them to binary and multi-label tasks, whose decisions use a threshold chosen on
    validation, and trains multi-class and ordinal tasks, decided by the argmax, unweighted; with
    ``prior_correction``, weighted multi-class decisions are moved back to the training prior by a
    ``-log(weight)`` logit offset folded into the output bias after training), ``loss: focal`` with
    ``focal_gamma``, ``logit_adjust: tau`` (logit-adjusted loss, 1.0 as in Menon et al. 2021); with
    :attr:`TrainConfig.sampler` ``balanced`` for class-balanced sampling, and the operating point
    for threshold moving. ``layer_decay`` < 1 scales each earlier layer's learning rate by that factor
    (layer-wise learning-rate decay, for fine-tuning pretrained weights).
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    warmup_epochs: float = 1.0
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    label_smoothing: float = 0.0
    class_weight: Literal["balanced"] | None = None
    class_weight_multiclass: bool = True
    prior_correction: bool = False
    grad_clip: float | None = None
    loss: Literal["ce", "focal"] = "ce"
    focal_gamma: float = 2.0
    logit_adjust: float = 0.0
    layer_decay: float = 1.0


@dataclass
class AugmentConfig:
    """Light on-the-fly batch augmentation (see :mod:`medclass.transforms`).

    Spatial: ``translate``, ``rotate``, ``scale``, flips, ``crop`` (smallest area kept by a random
    resized crop; 1 = off), ``elastic`` (largest displacement, fraction of the side). Intensity:
    ``brightness``, ``contrast``, ``gamma`` (log-gamma range), ``bias_field`` (MRI inhomogeneity
    strength), ``equalize`` (share of images given CLAHE). Policy: ``trivial`` adds one random
    operation per image (TrivialAugment style). Noise: ``noise`` (Gaussian sigma), ``speckle``
    (multiplicative sigma, ultrasound), ``salt_pepper`` (largest share of pixels), ``blur``
    (largest Gaussian sigma in pixels). Mixing: ``mixup`` and ``cutmix`` are Beta parameters
    (0 = off; with both, each batch uses one of them).
    """

    enabled: bool = False
    translate: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    hflip: bool = False
    vflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    noise: float = 0.0
    gamma: float = 0.0
    blur: float = 0.0
    speckle: float = 0.0
    salt_pepper: float = 0.0
    crop: float = 1.0
    elastic: float = 0.0
    bias_field: float = 0.0
    equalize: float = 0.0
    policy: Literal["none", "trivial"] = "none"
    mixup: float = 0.0
    cutmix: float = 0.0


@dataclass
class TrainConfig:
    """Training loop options.

    Attributes:
        epochs: Passes over the training split.
        min_steps: Raise ``epochs`` until at least this many optimiser steps are taken, so small
            datasets get enough updates (0 = off). Not applied when ``epochs`` is given explicitly
            (a flag or override) and ``min_steps`` is not.
        precision: ``auto`` (bf16 autocast where the device has native bf16 kernels), ``bf16`` or ``fp32``.
        select_metric: Validation metric that picks the kept epoch: ``auc``, ``acc`` or ``loss``.
        sampler: ``random`` (each row once per epoch, shuffled) or ``balanced`` (rows drawn with
            replacement so every class is equally likely).
        max_minutes: Training-time budget. The first two epochs' durations decide how many epochs
            fit, and the learning-rate schedule is shortened to end there; an epoch still running
            when the budget is spent ends at that step. The best epoch so far is kept.
        device: ``auto`` (a CUDA GPU when PyTorch sees one, else the CPU), ``cpu`` or ``cuda[:N]``.
            Rows are stored and augmented on the CPU and each batch moves to the device; runs on a
            GPU are not bit-for-bit reproducible.
        ensemble: Train this many models (seeds ``seed * ensemble + i``, each an even share of what
            the earlier ones left of ``max_minutes``) and keep their averaged probabilities as the
            run's model: a deep ensemble in one checkpoint (:mod:`medclass.training.ensemble`).
            1 = one model.
        world_size: How many processes trained the run (written by the loop: ``torchrun`` or ``--nproc``
            sets it, not this key). ``batch_size`` is the global batch, split evenly over them, and ``optim.lr``
            applies to it unchanged.
    """

    epochs: int = 20
    min_steps: int = 0
    batch_size: int = 128
    eval_batch_size: int = 512
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    threads: int | None = None
    ema: float = 0.0
    select_metric: Literal["auc", "acc", "loss"] = "auc"
    sampler: Literal["random", "balanced"] = "random"
    max_minutes: float | None = None
    device: str = "auto"
    ensemble: int = 1
    world_size: int = 1


@dataclass
class EvalConfig:
    """How the operating point, calibration and confidence intervals are computed, and test-time augmentation.

    ``tta`` lists views whose logits are averaged with the original's at evaluation and
    prediction (``hflip``, ``vflip``, ``shift``). ``calibration`` is fitted on the validation split
    after training: ``temperature`` (the default: one temperature, decisions unchanged),
    ``vector`` (per-class scale and bias, multi-class only) or ``none``. Both are stored in the
    checkpoint and applied by ``evaluate`` and ``predict``.

    Referral: conformal prediction sets (APS) are calibrated on validation for every ``alpha``
    from 0.01 to 0.30; ``alpha`` is the level ``predict`` reports. Binary models also store the
    smallest decision certainty to accept so that sensitivity on the accepted validation cases
    stays at or above ``referral_sensitivity``; other cases are flagged "refer". Multi-class
    cases are referred when their prediction set is not a single class.

    ``urgent_classes`` names the classes whose probability ranks cases for triage (multi-class; empty:
    every class but the first); a binary task ranks by its positive class.
    """

    operating_point: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = 0.95
    n_bootstrap: int = 1000
    tta: list[Literal["hflip", "vflip", "shift"]] = field(default_factory=list)
    calibration: Literal["temperature", "vector", "none"] = "temperature"
    alpha: float = 0.1
    referral_sensitivity: float = 0.95
    urgent_classes: list[str] = field(default_factory=list)


@dataclass
class PretrainConfig:
    """Self-supervised pretraining (``medclass pretrain``): an encoder learnt from images without labels.

    Attributes:
        method: ``simclr`` (NT-Xent between two views), ``byol`` (an online network predicts a momentum
            target's projection of the other view), ``mim`` (masked image modelling: masked patches
            reconstructed from the feature map), ``mae`` (the masked autoencoder of the ViTs and the hybrid:
            the transformer sees only the visible tokens), ``rotation`` (2D: which of four quarter turns) or
            ``slice_order`` (3D: the order of three shuffled slabs along depth).
        epochs: Passes over the pooled images.
        min_steps: Raise the epoch count until at least this many optimiser steps run.
        batch_size: Images per step (each gives two views for ``simclr`` and ``byol``).
        lr: Peak learning rate (AdamW, warm-up then cosine decay).
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up length.
        temperature: NT-Xent temperature (``simclr``).
        proj_dim: Output size of the projection head (``simclr``, ``byol``).
        momentum: Starting momentum of the BYOL target network (raised to 1 on a cosine).
        mask_ratio: Share of patches masked (``mim``, ``mae``).
        mask_patch: Side of a masked patch in pixels (``mim``).
        unlabeled: Further data specs whose images join the pool (labels ignored).
        copy_correlation: A pooled image whose grey thumbnail (whole or centrally cropped) correlates this
            well with a validation or test image's is a copy of it and is dropped
            (:mod:`medclass.data.unlabeled`).
        views: The augmentation that makes each view.
    """

    method: Literal["simclr", "byol", "mim", "mae", "rotation", "slice_order"] = "simclr"
    epochs: int = 30
    min_steps: int = 0
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    temperature: float = 0.2
    proj_dim: int = 128
    momentum: float = 0.99
    mask_ratio: float = 0.5
    mask_patch: int = 4
    unlabeled: list[str] = field(default_factory=list)
    copy_correlation: float = 0.95
    views: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(
            enabled=True,
            translate=0.1,
            rotate=15.0,
            scale=0.2,
            crop=0.6,
            brightness=0.3,
            contrast=0.3,
            gamma=0.3,
            blur=0.5,
            noise=0.03,
        )
    )


@dataclass
class SemiConfig:
    """Semi-supervised training: labelled and unlabelled images in every step (``train --semi``).

    Attributes:
        method: ``none``, ``fixmatch`` (pseudo-labels from a weak view, above ``threshold``, train the
            strong view), ``meanteacher`` (consistency with an EMA teacher) or ``pseudolabel``
            (confident predictions of the model itself as targets).
        unlabeled: Further data specs whose images are unlabelled (besides the training images whose
            labels ``data.labels`` held back).
        threshold: Confidence a pseudo-label needs (``fixmatch``, ``pseudolabel``).
        weight: Weight of the unlabelled loss.
        ratio: Unlabelled images per labelled image in a step.
        fairness: How rare classes keep their pseudo-labels: ``distribution_alignment`` (scale the
            predictions by the labelled class prior over their running mean), ``classwise`` (each class's
            threshold scaled by how well it is learnt) or ``none``.
        teacher_ema: EMA decay of the Mean Teacher.
        rampup_epochs: The unlabelled weight rises from 0 over these epochs.
        strong: The strong view's augmentation (``fixmatch``).
    """

    method: Literal["none", "fixmatch", "meanteacher", "pseudolabel"] = "none"
    unlabeled: list[str] = field(default_factory=list)
    threshold: float = 0.95
    weight: float = 1.0
    ratio: int = 3
    fairness: Literal["none", "distribution_alignment", "classwise"] = "distribution_alignment"
    teacher_ema: float = 0.99
    rampup_epochs: float = 5.0
    strong: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(
            enabled=True,
            translate=0.12,
            rotate=20.0,
            scale=0.2,
            crop=0.7,
            brightness=0.4,
            contrast=0.4,
            gamma=0.3,
            blur=0.6,
            noise=0.05,
            policy="trivial",
        )
    )


@dataclass
class RunConfig:
    """The whole, resolved configuration of one run.

    ``per_modality`` maps a modality (``xray``, ``ct``, ``ultrasound``, ...) or a dataset name to
    settings that apply only to such data, on top of the recipe and under any config file or flag
    (a dataset's own section after its modality's); see :func:`specialise`.

    ``fallback`` names the recipe used instead for data that no ``per_modality`` section names (``auto``
    chooses from the data): a recipe tuned on a few datasets then applies only where it was measured.
    ``None``: the recipe applies to any data.
    """

    name: str | None = None
    recipe: str | None = None
    fallback: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    per_modality: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, ready for YAML/JSON."""
        return asdict(self)


def _merge(obj: Any, updates: dict[str, Any], where: str) -> None:
    """Recursively apply ``updates`` onto dataclass ``obj`` in place, checking names and types."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(updates).__name__}")
    hints = get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    for key, value in updates.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{where}.{key}")
        else:
            setattr(obj, key, check_type(value, hints[key], f"{where}.{key}"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning any problem into a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes, first match wins: ``$MEDCLASS_RECIPES_DIR``, ``./configs/recipes``, then the
    recipes shipped inside the package (read through :mod:`importlib.resources`, so an installed wheel finds them)."""
    from importlib.resources import files

    dirs = []
    if os.environ.get("MEDCLASS_RECIPES_DIR"):
        dirs.append(Path(os.environ["MEDCLASS_RECIPES_DIR"]))
    dirs.append(Path.cwd() / "configs" / "recipes")
    dirs.append(Path(str(files("medclass") / "recipes")))
    return dirs


def find_recipe(name: str) -> Path:
    """Resolve a recipe name (``default``) or a path to its YAML file."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    for folder in recipe_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"unknown recipe '{name}' (known: {', '.join(known) or 'none found'})")


def list_recipes() -> list[str]:
    """Names of the recipes found in :func:`recipe_dirs`."""
    return sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def build_config(
    *,
    recipe: str | None = "default",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    modality: str | None = None,
    dataset: str | None = None,
) -> RunConfig:
    """Build a :class:`RunConfig` from defaults, a recipe, a config file and overrides.

    Args:
        recipe: Recipe name or YAML path; ``None`` for the bare defaults.
        config_file: A user YAML file applied after the recipe.
        overrides: The values the user gave explicitly (command-line flags, ``--set``, keyword arguments of
            :func:`medclass.train`), as a nested mapping applied last; ``None`` values are skipped.
        modality: The data's modality (from the catalog); ``data.modality`` wins when set.
        dataset: The data's name.

    The ``per_modality`` sections for the modality and then the dataset name apply right after
    the recipe, so a config file and flags still override them; ``data.modality`` records the
    modality used.

    An explicit value wins: when ``overrides`` set ``train.epochs`` but not ``train.min_steps``,
    ``min_steps`` is 0, so the epoch count asked for is the one trained (a recipe's ``min_steps``
    would otherwise raise it on small datasets; ``--epochs 1`` trains one epoch).

    Returns:
        The resolved configuration.

    Raises:
        ConfigError: An unknown key, a value of the wrong type or not among a field's choices, naming
            where it came from (the recipe or config file, or ``command line``).
    """
    layers: list[tuple[dict[str, Any], str]] = []
    if recipe:
        path = find_recipe(recipe)
        layers.append((read_yaml(path), str(path)))
    if config_file:
        layers.append((read_yaml(config_file), str(config_file)))
    if overrides:
        explicit = drop_none(overrides)
        train = explicit.get("train")
        if isinstance(train, dict) and "epochs" in train and "min_steps" not in train:
            explicit["train"] = {**train, "min_steps": 0}  # the epochs asked for, not more
        layers.append((explicit, "command line"))
    cfg = RunConfig()
    for data, where in layers:
        _merge(cfg, data, where)
    modality = cfg.data.modality or modality
    keys = [k for k in dict.fromkeys((modality, dataset)) if k and k in cfg.per_modality]
    if keys:
        sections = {k: cfg.per_modality[k] for k in keys}
        cfg = RunConfig()
        for i, (data, where) in enumerate(layers):
            _merge(cfg, data, where)
            if i == 0:
                for k, section in sections.items():
                    _merge(cfg, section, f"per_modality.{k}")
    cfg.recipe = recipe or None
    cfg.data.modality = modality
    return cfg


def config_from_dict(data: dict[str, Any], where: str = "config") -> RunConfig:
    """Rebuild a RunConfig from a saved dict (e.g. a run's ``config.yaml``)."""
    cfg = RunConfig()
    _merge(cfg, data, where)
    return cfg


def dump_yaml(cfg: RunConfig) -> str:
    """The configuration as YAML text (key order kept)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
