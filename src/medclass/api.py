"""The public Python API: train a run, open it, predict with it. The CLI, the REST service and the PACS node call these.

Example:
    >>> import medclass
    >>> run = medclass.train("breastmnist", epochs=1, out="runs/breast")  # doctest: +SKIP
    >>> run.metrics["splits"]["test"]["auc"]  # doctest: +SKIP
    0.87
    >>> predictor = medclass.load("runs/breast")  # doctest: +SKIP
    >>> predictor.predict_proba(images).shape  # (N, 2) for uint8 images (N, 28, 28)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medclass.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medclass.config import RunConfig
    from medclass.predict import Predictor

#: Keyword shortcuts of :func:`train` and the configuration key each sets.
SHORTCUTS: dict[str, tuple[str, str]] = {
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "ensemble_size": ("train", "ensemble"),
    "max_minutes": ("train", "max_minutes"),
    "lr": ("optim", "lr"),
    "image_size": ("data", "image_size"),
    "window": ("data", "window"),
    "positive_class": ("data", "positive_class"),
    "label_column": ("data", "label_column"),
    "group_column": ("data", "group_column"),
    "group_by": ("data", "group_by"),
    "init_from": ("model", "init_from"),
    "labels": ("data", "labels"),
    "label_seed": ("data", "label_seed"),
    "tabular": ("data", "tabular"),
    "fusion": ("model", "fusion"),
    "semi": ("semi", "method"),
    "unlabeled": ("semi", "unlabeled"),
    "target_sensitivity": ("eval", "target_sensitivity"),
}
_SECTIONS = ("data", "model", "optim", "augment", "train", "eval", "pretrain", "semi", "per_modality")


class Run:
    """A run folder written by :func:`train` (or ``medclass train``): checkpoint, ``metrics.json``, report.

    Args:
        path: The folder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "model.json").is_file():
            raise DataError(f"{self.path}: not a medclass run (no model.json)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json``: ``{"dataset", "task", "label_names", "splits": {"val": ..., "test": ...}}``."""
        path = self.path / "metrics.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: the run has no metrics yet (training did not finish)") from None

    @property
    def config(self) -> RunConfig:
        """The resolved configuration the run was trained with."""
        from medclass.config import config_from_dict, read_yaml

        return config_from_dict(read_yaml(self.path / "config.yaml"), str(self.path / "config.yaml"))

    def predictor(self, engine: str = "torch", **kwargs: Any) -> Predictor:
        """The run's :class:`~medclass.predict.Predictor` (see :func:`load`)."""
        return load(self.path, engine=engine, **kwargs)


def overrides_from(
    *,
    data: str | None = None,
    model: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Nested configuration overrides from :func:`train`'s arguments.

    Args:
        data: The data spec.
        model: An architecture; it replaces a recipe's ensemble members.
        options: Shortcut names (:data:`SHORTCUTS`), dotted keys (``"augment.rotate"``) or whole sections
            (``optim={"lr": 1e-3}``); ``None`` values are skipped.

    Raises:
        ConfigError: An unknown option.
    """
    from medclass.config_overrides import NULL, put_dotted

    out: dict[str, Any] = {"data": {"spec": data}, "model": {"name": model, "members": [] if model else None}}
    for key, value in (options or {}).items():
        if key in SHORTCUTS and not (key in _SECTIONS and isinstance(value, dict)):  # semi="fixmatch" or semi={...}
            section, name = SHORTCUTS[key]
            if key == "tabular" and isinstance(value, str):  # tabular="age,sex" as on the command line
                value = [c.strip() for c in value.split(",") if c.strip()]
            out.setdefault(section, {})[name] = value
            continue
        value = NULL if value is None else value  # a key named on purpose: null is its value
        if "." in key:
            put_dotted(out, key, value)
        elif key in _SECTIONS and isinstance(value, dict):
            out.setdefault(key, {}).update({k: NULL if v is None else v for k, v in value.items()})
        else:
            known = ", ".join([*SHORTCUTS, *_SECTIONS])
            raise ConfigError(f"unknown option '{key}' (known: {known}, or a dotted key such as augment.rotate)")
    if out.get("eval", {}).get("target_sensitivity") is not None:
        out["eval"].setdefault("operating_point", "sensitivity")
    return out


def _resumed(out: str | Path | None) -> tuple[RunConfig, Any]:
    """The saved configuration of the run in ``out`` and its data, for ``resume``."""
    from medclass.data.sources import load_configured
    from medclass.training.loop import resume_config

    if out is None or not (Path(out) / "config.yaml").is_file():
        raise DataError(f"{out or 'out'}: nothing to resume (no config.yaml); give the run's folder")
    cfg = resume_config(out)
    return cfg, load_configured(cfg.data)


def train(
    data: str | Path,
    model: str | None = None,
    recipe: str = "auto",
    out: str | Path | None = None,
    *,
    config: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Run | None:
    """Train, calibrate and evaluate a model; the same run folder as ``medclass train``.

    Args:
        data: Catalog name (``breastmnist``, ``breastmnist@64``), ``.npz``, folder or CSV manifest.
        model: Registry name or ``timm/<name>``; ``None`` keeps the recipe's.
        recipe: ``auto`` (chosen from the data), a shipped recipe (``default``, ``best``, ``hires``) or a YAML path.
        out: Run folder (default ``runs/<data>-<model>-<time>``).
        config: A YAML file applied over the recipe.
        resume: Continue the run in ``out`` from its last checkpoint (its saved configuration is used).
        progress: Allow a progress bar (only ever shown on a terminal).
        **overrides: Values that win over the recipe: shortcuts such as ``epochs=1``, ``lr=1e-3``,
            ``image_size=64``, ``positive_class="malignant"``, ``tabular=["age", "sex"]`` (manifest columns of
            clinical fields, or ``"age,sex"``) with ``fusion="film"``; sections such as ``optim={"lr": 1e-3}``; dotted
            keys such as ``**{"augment.rotate": 5}`` (``None`` there sets null: ``**{"train.max_minutes": None}``;
            a shortcut's ``None`` means not given). An explicit ``epochs`` is the number of epochs trained.

    Returns:
        The finished :class:`Run`. Under ``torchrun`` (several processes, :mod:`medclass.training.distributed`)
        rank 0 returns it and the other ranks ``None``.
    """
    from medclass.training.distributed import quiet_other_ranks
    from medclass.training.run import default_out, resolve_run, run_training

    quiet_other_ranks()
    if resume:
        cfg, dataset = _resumed(out)
    else:
        cfg, dataset = resolve_run(
            recipe=recipe,
            config_file=config,
            overrides=overrides_from(data=str(data), model=model, options=overrides),
        )
    if out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("out: give the run folder when training with several processes (they must agree on it)")
    path = Path(out) if out is not None else default_out(cfg)
    if run_training(cfg, dataset, path, resume=resume, progress=progress) is None:
        return None  # a distributed rank other than 0: rank 0 finished the run
    return Run(path)


def pretrain(
    data: str | Path,
    method: str | None = None,
    model: str | None = None,
    out: str | Path | None = None,
    *,
    unlabeled: list[str] | None = None,
    recipe: str = "auto",
    config: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Run:
    """Pretrain an encoder without labels (self-supervised) and probe it on the task's labels.

    Args:
        data: The task's data; only its training images are pretrained on.
        method: ``simclr``, ``byol``, ``mim``, ``mae`` (ViTs, hybrid), ``rotation``
            (2D) or ``slice_order`` (3D); ``None``: the recipe's.
        model: Registry name or ``timm/<name>``; ``None`` keeps the recipe's.
        out: Run folder (default ``runs/<data>-<model>-<time>``); ``train(init_from=out)`` starts from it.
        unlabeled: Further data specs pooled without labels (copies of the task's val/test images dropped).
        recipe: As for :func:`train`; its ``pretrain`` section holds the method's settings.
        config: A YAML file applied over the recipe.
        resume: Continue the run in ``out`` from its last checkpoint.
        progress: Allow a progress bar (only on a terminal).
        **overrides: As for :func:`train`; ``epochs``, ``batch_size`` and ``lr`` set the ``pretrain`` section's.

    Returns:
        The :class:`Run`; ``run.metrics["probe"]`` holds the linear and k-NN probes.
    """
    from medclass.ssl.run import run_pretraining
    from medclass.training.run import default_out, resolve_run

    options = dict(overrides)
    section = dict(options.pop("pretrain", None) or {})
    for key in ("epochs", "batch_size", "lr"):
        if options.get(key) is not None:
            section[key] = options.pop(key)
    if method is not None:
        section["method"] = method
    if unlabeled:
        section["unlabeled"] = [str(u) for u in unlabeled]
    if resume:
        cfg, dataset = _resumed(out)
    else:
        options["pretrain"] = section
        cfg, dataset = resolve_run(
            recipe=recipe, config_file=config, overrides=overrides_from(data=str(data), model=model, options=options)
        )
    path = Path(out) if out is not None else default_out(cfg)
    run_pretraining(cfg, dataset, path, resume=resume, progress=progress)
    return Run(path)


def require_flower() -> None:
    """A one-line ConfigError when Flower (the ``federated`` extra) is not installed."""
    import importlib.util

    if importlib.util.find_spec("flwr") is None:
        raise ConfigError("federated learning needs Flower: pip install 'medclass[federated]'")


def federate(
    data: str | Path,
    *,
    clients: int = 5,
    partition: str = "iid",
    strategy: str = "fedavg",
    rounds: int = 10,
    local_epochs: int = 1,
    out: str | Path | None = None,
    model: str | None = None,
    recipe: str = "default",
    lr: float | None = None,
    batch_size: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    mu: float = 0.01,
    server_lr: float | None = None,
    server_momentum: float = 0.9,
    min_clients: int | None = None,
    baseline: bool = True,
    resume: bool = False,
    dp_epsilon: float = 0.0,
    dp_delta: float = 1e-5,
    dp_clip: float = 1.0,
    init_from: str | Path | None = None,
    settings: dict[str, Any] | None = None,
) -> Run:
    """Federated training of ``clients`` hospitals cut from ``data``, on Flower's simulation engine.

    Each client holds a patient-grouped share of every split (``partition``), trains locally with the recipe, and
    sends only weights and counts; the server aggregates by ``strategy`` each round. See ``docs/federated.md``.

    Args:
        data: Catalog name, ``.npz``, folder or CSV manifest, shared out among the clients.
        clients: Number of clients (with ``partition="column:NAME"``, 0 means one per site).
        partition: ``iid``, ``dirichlet:ALPHA``, ``quantity:ALPHA``, ``shift`` or ``column:NAME``.
        strategy: ``fedavg``, ``fedprox``, ``fedadam``, ``fedbn`` or ``fedavgm`` (FedAvg with server momentum).
        rounds: Rounds of federated training.
        local_epochs: Local passes over each client's training split per round.
        out: Run folder (default ``runs/<data>-fed-<strategy>-<time>``).
        model: Architecture; ``None`` keeps the recipe's.
        recipe: The recipe the clients train with.
        lr: Clients' learning rate in round 1 (cosine to 1/20 by the last); ``None``: the recipe's.
        batch_size: Clients' batch size; ``None``: the recipe's.
        image_size: Resize images to this side.
        seed: Seed of the partition, the initial model and the clients' shuffles.
        mu: FedProx's proximal weight.
        server_lr: The server learning rate of ``fedadam`` (default 0.01) and ``fedavgm`` (default 1).
        server_momentum: FedAvgM's server momentum.
        min_clients: Clients that must answer for a round to count (default: all).
        baseline: Also train and test each client's local-only model.
        resume: Continue the federation in ``out`` after its last completed round.
        dp_epsilon: Differential privacy: each client trains with DP-SGD so that it spends at most this epsilon over
            the whole federation (its BatchNorm layers become GroupNorm); 0 trains without it. See
            ``docs/federated-privacy.md``.
        dp_delta: Delta of each client's (epsilon, delta) guarantee.
        dp_clip: Each training row's gradient is clipped to this L2 norm.
        init_from: A run folder (or ``model.safetensors``) the global model starts from, e.g. a model trained on
            public data: every tensor that fits is copied, the head of another task is not. With ``dp_epsilon``, a
            run trained with ``model.norm: group`` fits every layer.
        settings: Dotted configuration keys every client sets over the recipe, e.g. ``{"optim.logit_adjust": 1.0}``
            (a loss that learns each client's logits free of its own label prior; ``--set`` on the command line).

    Returns:
        The :class:`Run`; ``run.metrics["federated"]`` holds the rounds, each client's own test and baseline.

    Example:
        >>> run = medclass.federate("pneumoniamnist", clients=5, partition="dirichlet:0.3", rounds=10)  # doctest: +SKIP
    """
    import time

    require_flower()
    from medclass.federated.partition import parse_partition
    from medclass.federated.run import simulate
    from medclass.federated.server import ServerSettings

    parse_partition(partition)
    settings = ServerSettings(
        out=str(out or ""),
        rounds=rounds,
        strategy=strategy,
        local_epochs=local_epochs,
        lr=lr,
        mu=mu,
        server_lr=server_lr,
        server_momentum=server_momentum,
        min_clients=min_clients or max(1, clients),
        seed=seed,
        model=model,
        recipe=recipe,
        batch_size=batch_size,
        image_size=image_size,
        baseline=baseline,
        resume=resume,
        dp_epsilon=dp_epsilon,
        dp_delta=dp_delta,
        dp_clip=dp_clip,
        init_from=str(init_from) if init_from else None,
        settings=dict(settings or {}),
    )  # checks the strategy, rounds, local epochs and privacy settings
    if out is None:
        stem = Path(str(data).rstrip("/")).stem.replace("@", "_")
        settings.out = str(Path("runs") / f"{stem}-fed-{settings.strategy}-{time.strftime('%Y%m%d-%H%M%S')}")
    simulate(str(data), settings, clients=clients, partition=partition, partition_seed=seed)
    return Run(settings.out)


def federate_server(
    out: str | Path,
    *,
    listen: str = "127.0.0.1:9092",
    certificates: str | Path | None = None,
    insecure: bool = False,
    authorized_keys: str | Path | None = None,
    clients: int = 0,
    **settings: Any,
) -> Run:
    """The server of a real federation (a Flower SuperLink and the rounds), run to the end; it holds no data.

    Args:
        out: The run folder.
        listen: ``HOST:PORT`` the SuperLink listens on.
        certificates: Folder of ``ca.pem``, ``server.pem``, ``server.key`` (made there when absent); ``None`` needs
            ``insecure``.
        insecure: No TLS (loopback experiments only).
        authorized_keys: Folder of the clients' ``*.pub`` keys: only those SuperNodes may connect.
        clients: Clients to wait for before the first round (0: ``min_clients``).
        **settings: The federation's settings, as :class:`medclass.federated.server.ServerSettings` takes them
            (``rounds``, ``strategy``, ``local_epochs``, ``min_clients``, ``model``, ``lr``, ``dp_epsilon``, ...).

    Returns:
        The :class:`Run`: the global model and ``metrics.json`` with the clients' own figures.

    Example:
        >>> medclass.federate_server("runs/fed", certificates="certs", clients=3, rounds=10)  # doctest: +SKIP
    """
    require_flower()
    from medclass.federated.deploy import serve
    from medclass.federated.server import ServerSettings

    if "data" in settings:
        raise ConfigError("the federation's server holds no data; give each client its own")
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"listen: expected HOST:PORT, got {listen!r}")
    config = ServerSettings(out=str(out), expected_clients=clients, **settings)
    serve(config, host=host or "127.0.0.1", port=int(port), certificates=certificates, insecure=insecure,
          keys=authorized_keys)  # fmt: skip
    return Run(out)


def federate_client(
    data: str | Path,
    server: str,
    *,
    root_certificates: str | Path | None = None,
    insecure: bool = False,
    auth_key: str | Path | None = None,
    partition: str | None = None,
    clients: int = 1,
    client_id: int = 0,
    seed: int = 0,
) -> int:
    """One hospital of a real federation (a Flower SuperNode): trains on ``data``, which never leaves it.

    Runs until the server's federation ends or the process is stopped.

    Args:
        data: This hospital's data (catalog name, ``.npz``, folder or CSV manifest).
        server: The server's ``HOST:PORT``.
        root_certificates: The CA file that signed the server's certificate (TLS); ``None`` needs ``insecure``.
        insecure: No TLS.
        auth_key: This client's private key, for a server that accepts only known clients.
        partition: Take share ``client_id`` of ``clients`` of ``data`` by this scheme (experiments on one set).
        clients: Number of shares of ``partition``.
        client_id: This client's index (its name, seed offset and share).
        seed: Seed of the partition.

    Returns:
        The SuperNode's exit status (0 once it was stopped cleanly).
    """
    require_flower()
    from medclass.federated.client import ClientSource
    from medclass.federated.deploy import join

    source = ClientSource(str(data), partition, clients, client_id, seed)
    return join(source, server, root_certificates=root_certificates, insecure=insecure, auth_key=auth_key)


def probe(
    run: str | Path,
    data: str | Path,
    kinds: tuple[str, ...] = ("linear", "knn"),
    *,
    labels: float | None = None,
    label_seed: int = 0,
) -> dict[str, Any]:
    """Measure a run's frozen encoder on labelled data with linear and/or k-NN probes.

    Args:
        run: A pretraining run (or any run: its backbone is probed).
        data: Labelled data, split as for training (``val`` chooses the linear probe's regularisation).
        kinds: ``linear``, ``knn``.
        labels: Fit the probes on this many training labels (or this share), a stratified patient-grouped subset.
        label_seed: Seed of that subset.

    Returns:
        ``{kind: {"val"|"test": {"auc", "acc", "n"}}}``.
    """
    from medclass.data.sources import load_dataset
    from medclass.ssl.probe import probe_run

    if (Path(run) / "config.yaml").is_file():  # split and size the data as the run did
        from medclass.data.sources import load_configured
        from medclass.training.loop import resume_config

        cfg = resume_config(run)
        cfg.data.spec, cfg.data.label_column, cfg.data.group_column = str(data), None, None
        dataset = load_configured(cfg.data)
    else:
        prep = json.loads((Path(run) / "model.json").read_text(encoding="utf-8"))["preprocessing"]
        dataset = load_dataset(str(data), image_size=prep.get("input_shape", [None])[-1])
    rows = None
    if labels is not None:
        from medclass.data.labelled import label_subset

        rows = label_subset(dataset.splits["train"], labels, label_seed, dataset.task, dataset.num_classes)[0]
    return probe_run(run, dataset, kinds, train_rows=rows)


def load(run_dir: str | Path, engine: str = "torch", **kwargs: Any) -> Predictor:
    """A :class:`~medclass.predict.Predictor` for a run folder: its preprocessing, calibration and threshold applied.

    Args:
        run_dir: The run.
        engine: ``torch`` or ``onnxruntime`` (the exported graph; exported on first use).
        **kwargs: Options of :meth:`~medclass.predict.Predictor.from_checkpoint` (``ensemble``, ``mc_samples``,
            ``onnx_file``).
    """
    from medclass.predict import Predictor

    return Predictor.from_checkpoint(run_dir, engine=engine, **kwargs)
