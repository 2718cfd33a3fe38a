"""A whole run: configuration resolved against the data, training (one model or an ensemble), then everything fitted
on validation (calibration, operating point, conformal sets, referral), the checkpoint, ``metrics.json`` and the report.

This is what ``medclass.train`` and ``medclass train`` do; both call :func:`resolve_run` then :func:`run_training`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from medclass.config import RunConfig, build_config
from medclass.errors import MedclassError

log = logging.getLogger(__name__)


def _load_args(cfg: RunConfig) -> tuple:
    d = cfg.data
    return (d.spec, d.image_size, d.val_fraction, d.test_fraction, d.split_seed, tuple(d.file_options().items()))


def default_out(cfg: RunConfig) -> Path:
    """``runs/<data>-<model>-<time>``: where a run goes when no folder is given."""
    data = Path(cfg.data.spec.rstrip("/")).stem.replace("@", "_")
    return Path("runs") / f"{data}-{cfg.model.name.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolve_run(
    *,
    recipe: str | None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[RunConfig, Any]:
    """The run's configuration and its dataset, each shaped by the other.

    The data is loaded once with the configuration the recipe and the user give. A recipe with a ``fallback`` that
    has no ``per_modality`` section for the data's modality or name gives way to its fallback; ``auto`` picks a
    recipe from the data (:func:`medclass.recipes.auto_recipe`); then the chosen recipe's ``per_modality`` sections
    apply for the data's modality and name. The data is loaded again only when that changed how it is read.
    ``config.recipe`` records the path taken: ``auto:hires``, ``best>auto:default``.

    Args:
        recipe: Recipe name or YAML path, ``"auto"``, or ``None`` for the bare defaults.
        config_file: A YAML file applied over the recipe.
        overrides: Nested values given explicitly by the user (``None`` values are skipped); they win.

    Returns:
        ``(config, dataset)``.
    """
    from medclass.data.sources import load_configured

    first = None if recipe == "auto" else recipe
    cfg = build_config(recipe=first, config_file=config_file, overrides=overrides)
    dataset = load_configured(cfg.data)
    chosen, label = recipe, recipe
    modality = cfg.data.modality or dataset.extra.get("modality")
    if cfg.fallback and not any(k in cfg.per_modality for k in (modality, dataset.name)):
        chosen = cfg.fallback
        log.info("recipe %s was not measured on %s: using %s instead", recipe, dataset.name, chosen)
        label = f"{recipe}>{chosen}"
    if chosen == "auto":
        from medclass.recipes import auto_recipe

        chosen = auto_recipe(dataset)
        log.info("recipe auto: %s for %s", chosen, _data_summary(dataset))
        label = f"{label}:{chosen}"
    if chosen != first or cfg.per_modality:
        before = _load_args(cfg)
        cfg = build_config(
            recipe=chosen,
            config_file=config_file,
            overrides=overrides,
            modality=dataset.extra.get("modality"),
            dataset=dataset.name,
        )
        if _load_args(cfg) != before:
            dataset = load_configured(cfg.data)
    cfg.recipe = label
    from medclass.training.multimodal import resolve_fusion

    resolve_fusion(cfg, dataset)  # before the ensemble check: fusion refuses ensembles with its own message
    _check_ensemble(cfg, dataset)
    return cfg, dataset


def _data_summary(dataset: Any) -> str:
    shape = "x".join(str(s) for s in dataset.splits["train"].images.shape[2:])
    return f"{dataset.task}, {dataset.num_classes} classes, {shape} px, {len(dataset.splits['train'])} training images"


def _check_ensemble(cfg: RunConfig, dataset: Any) -> None:
    """Ensemble settings that cannot work fail now, not halfway through training."""
    if cfg.train.ensemble < 1:
        raise MedclassError(f"train.ensemble: a run needs at least one model, got {cfg.train.ensemble}")
    if cfg.model.members and cfg.train.ensemble == 1:
        cfg.train.ensemble = len(cfg.model.members)
        if cfg.train.ensemble == 1:  # a list of one: that model, alone
            cfg.model.name, cfg.model.members = cfg.model.members[0], []
    from medclass.training.ensemble import member_config

    members = [member_config(cfg, i) for i in range(cfg.train.ensemble)] if cfg.train.ensemble > 1 else [cfg]
    if cfg.train.ensemble > 1 and any(m.model.name.lower().startswith("classical/") for m in members):
        raise MedclassError("train.ensemble: deep ensembles need neural networks, not classical models")
    if cfg.train.ensemble > 1 and cfg.model.members:
        from medclass.training.loop import model_meta

        for member in members[: len(cfg.model.members)]:
            model_meta(member, dataset)


def member_names(cfg: RunConfig) -> list[str]:
    """The architecture of every model the run trains, in order."""
    from medclass.training.ensemble import member_config

    if cfg.train.ensemble == 1:
        return [cfg.model.name]
    return [member_config(cfg, i).model.name for i in range(cfg.train.ensemble)]


def run_training(
    cfg: RunConfig, dataset: Any, out: str | Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any] | None:
    """Train ``cfg`` on ``dataset`` into the run folder ``out``; returns the run's ``metrics.json`` content.

    Under ``torchrun`` every process trains its share (:mod:`medclass.training.distributed`); rank 0 alone
    finishes the run and returns its metrics, the other ranks return ``None``.

    Args:
        cfg: The resolved configuration (:func:`resolve_run`); its ``name`` becomes the folder's name.
        dataset: The data.
        out: The run folder.
        resume: Continue a run killed in ``out`` from its last checkpoint.
        progress: Allow a progress bar (shown on a terminal only).
    """
    out = Path(out)
    cfg.name = out.name
    log.info("%s", dataset.describe())
    steps = f" (at least {cfg.train.min_steps} steps)" if cfg.train.min_steps else ""
    members = f", a deep ensemble of {cfg.train.ensemble}" if cfg.train.ensemble > 1 else ""
    model = " + ".join(dict.fromkeys(member_names(cfg)))
    epochs = f"{cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''}"
    log.info("model %s%s, recipe %s, %s%s, output %s", model, members, cfg.recipe, epochs, steps, out)
    t0 = time.perf_counter()
    if cfg.train.ensemble > 1:
        metrics = _train_ensemble(cfg, dataset, out, resume=resume, progress=progress)
    else:
        done = _train_one(cfg, dataset, out, resume=resume, progress=progress)
        if done is None:
            return None
        metrics = done[0]
    log.info("training took %.1f min; run folder %s", (time.perf_counter() - t0) / 60, out)
    return metrics


def _train_one(
    cfg: RunConfig, dataset: Any, out: Path, *, resume: bool, progress: bool
) -> tuple[dict, Any, dict, list] | None:
    """Train one model into ``out``, fit what is fitted on validation, write metrics and report.

    Returns:
        ``(metrics, model, model.json content, epoch history)``; ``None`` on a distributed rank other than 0.
    """
    from medclass.checkpoint import load_model
    from medclass.evaluate import read_history

    classical = cfg.model.name.lower().startswith("classical/")
    if cfg.semi.method != "none":
        if classical:
            raise MedclassError(f"semi.method {cfg.semi.method}: semi-supervised training needs a neural network")
        from medclass.training.semi import check_semi

        check_semi(cfg, dataset.task)  # before the run folder is made
    full, (dataset, unlabeled, labels) = dataset, apply_labels(cfg, dataset)
    if classical:
        from medclass.classical.fit import fit_classical
        from medclass.training.loop import model_meta

        history = fit_classical(cfg, dataset, out, meta=model_meta(cfg, dataset))
    else:
        from medclass.training import distributed
        from medclass.training.loop import fit

        unlabeled = unlabeled if cfg.semi.method != "none" else None
        history = fit(cfg, dataset, out, resume=resume, progress=progress, unlabeled=unlabeled)
        world = distributed.current()
        distributed.teardown(world)
        if not world.main:
            return None  # rank 0 calibrates, evaluates and writes the report
    model, meta = load_model(out)
    if not classical:
        from medclass.training.losses import correct_prior

        meta = correct_prior(model, meta, cfg, dataset)  # optim.prior_correction: before calibration
    if labels:
        meta["dataset"] = full.record()  # the data file's record, not the labelled subset's
    history = read_history(out) or history
    return _finish_run(cfg, dataset, out, model, meta, history, labels=labels), model, meta, history


def apply_labels(cfg: RunConfig, dataset: Any, *, quiet: bool = False) -> tuple[Any, Any, dict[str, int] | None]:
    """``data.labels``: the dataset with only the labelled training rows, the held-back images, and the record.

    Args:
        cfg: The run's configuration (``data.labels``, ``data.label_seed``).
        dataset: The data; validation and test are never touched.
        quiet: Leave out the INFO line ``labels: kept N of M training images (seed S); U unlabelled``.

    Returns:
        ``(dataset, unlabelled, record)``: a copy whose ``train`` split is the labelled subset
        (:func:`medclass.data.labelled.label_subset`), the ``uint8`` ``(U, C, ...)`` training images left
        unlabelled, and ``{"n", "of", "seed"}`` for ``metrics.json``; ``(dataset, None, None)`` without ``data.labels``.
    """
    if cfg.data.labels is None:
        return dataset, None, None
    from dataclasses import replace

    import torch

    from medclass.data.labelled import label_subset

    train = dataset.splits["train"]
    seed = cfg.data.label_seed
    kept, rest = label_subset(train, cfg.data.labels, seed, dataset.task, dataset.num_classes)
    line = f"labels: kept {len(kept)} of {len(train)} training images (seed {seed}); {len(rest)} unlabelled"
    log.log(logging.DEBUG if quiet else logging.INFO, "%s", line)
    subset = replace(dataset, splits={**dataset.splits, "train": train.subset(kept)}, extra=dict(dataset.extra))
    unlabeled = train.images[torch.as_tensor(rest, dtype=torch.long)]
    return subset, unlabeled, {"n": len(kept), "of": len(train), "seed": seed}


def _finish_run(
    cfg: RunConfig,
    dataset: Any,
    out: Path,
    model: Any,
    meta: dict,
    history: list,
    *,
    labels: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Fit calibration, threshold, conformal sets and referral on validation; save the checkpoint and the report.

    ``labels`` (how many training labels ``data.labels`` kept) is recorded in ``metrics.json``.
    """
    from medclass.checkpoint import save_model
    from medclass.evaluate import fit_post_training, write_evaluation

    metrics, plot, _ = fit_post_training(model, meta, dataset, cfg.eval, seed=cfg.train.seed)
    if labels:
        metrics["labels"] = labels
    if meta["preprocessing"].get("tabular") and len(dataset.splits["test"]):
        metrics["field_importance"] = _field_importance(model, meta, dataset.splits["test"], cfg.train.seed)
    save_model(out, model, {k: v for k, v in meta.items() if k != "format_version"})
    title = f"medclass: {dataset.name} / {cfg.model.name}"
    write_evaluation(out, metrics, plot, history=history, config=cfg.to_dict(), title=title)
    return metrics


def _field_importance(model: Any, meta: dict, test: Any, seed: int) -> dict[str, dict[str, float]]:
    """Permutation importance of each clinical field on the test split (:mod:`medclass.explain.fields`)."""
    from medclass.explain.fields import permutation_importance
    from medclass.predict import Predictor

    predictor = Predictor(model, meta)
    fields = None if test.tabular is None else test.tabular.columns
    return permutation_importance(predictor, test.images, fields, test.labels, seed=seed)


def _train_ensemble(cfg: RunConfig, dataset: Any, out: Path, *, resume: bool, progress: bool) -> dict[str, Any]:
    """Train ``cfg.train.ensemble`` members one after another (see :mod:`medclass.training.ensemble`); the metrics."""
    from medclass.checkpoint import load_model
    from medclass.config import dump_yaml
    from medclass.evaluate import read_history
    from medclass.training.ensemble import combine, ensemble_history, member_config, member_dir
    from medclass.training.loop import history_csv
    from medclass.utils.files import write_text

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(cfg))  # what --resume reads
    members, seeds, histories = [], [], []
    for i in range(cfg.train.ensemble):
        spent = sum(r["seconds"] for h in histories for r in h) / 60
        mcfg, mdir = member_config(cfg, i, spent), member_dir(out, i)
        if (mdir / "metrics.json").is_file():
            log.info("member %d/%d: finished earlier (%s)", i + 1, cfg.train.ensemble, mdir)
            model, meta = load_model(mdir)
            history = read_history(mdir)
        else:
            log.info("member %d/%d: seed %d, output %s", i + 1, cfg.train.ensemble, mcfg.train.seed, mdir)
            mcfg.name = f"{cfg.name}/members/{mdir.name}"
            member_resume = resume and (mdir / "config.yaml").is_file()
            _, model, meta, history = _train_one(mcfg, dataset, mdir, resume=member_resume, progress=progress)
        members.append((model, meta))
        seeds.append(mcfg.train.seed)
        histories.append(history)
    model, meta = combine(members, seeds)
    history = ensemble_history(histories)
    write_text(out / "history.csv", history_csv(history))
    labels = apply_labels(cfg, dataset, quiet=True)[2]  # each member trained on the same labelled subset
    return _finish_run(cfg, dataset, out, model, meta, history, labels=labels)
