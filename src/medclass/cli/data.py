"""The data commands of ``medclass``: ``index``, ``split`` and ``audit``.

They prepare clinical data for training: list what a folder holds (readable or not, with a hashed
patient), split a manifest by patient, and look for leakage between splits.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from medclass.cli.common import print_table


def cmd_index(args: argparse.Namespace) -> int:
    from medclass.data.index import index_folder

    out = args.out or "manifest.csv"
    s = index_folder(
        args.folder,
        out,
        salt=args.salt,
        patient_pattern=args.patient_pattern,
        decode=not args.header_only,
        max_pixels=args.max_pixels,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(
        f"indexed {s['rows']} images ({s['readable']} readable, {s['unreadable']} unreadable, "
        f"{s['patients']} patients) into {s['out']}"
    )
    if not s["salt_given"] and s["patients"]:
        print(
            "note: patient IDs were hashed with a random salt; give --salt (or MEDCLASS_SALT) to get the same "
            "hashes when indexing more data later",
            file=sys.stderr,
        )
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from medclass.data.splits import split_manifest

    by = None if args.by in ("none", "row", "image") else args.by
    summary = split_manifest(
        args.manifest,
        args.out or args.manifest,
        by=by,
        stratify=args.stratify or None,
        val=args.val,
        test=args.test,
        seed=args.seed,
    )
    classes = sorted({c for s in summary.values() for c in s["classes"]})
    header = ["split", "rows", "patients" if by else "groups", *classes]
    rows: list[list[Any]] = [
        [name, s["rows"], s["groups"], *[s["classes"].get(c, 0) for c in classes]] for name, s in summary.items()
    ]
    print_table(rows, header)
    print(f"wrote {args.out or args.manifest}; no {by or 'row'} is in two splits")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from medclass.data.audit_report import run_audit

    return run_audit(
        args.spec,
        strict=args.strict,
        near_distance=args.near_distance,
        json_out=args.json,
        min_correlation=args.min_correlation,
        label_column=args.label_column,
        group_column=args.group_column,
    )


def add_data_commands(sub: Any, parents: list[argparse.ArgumentParser], formatter: type) -> None:
    """Add ``index``, ``split`` and ``audit`` to the ``medclass`` subcommand parser."""
    kw: dict[str, Any] = {"parents": parents, "formatter_class": formatter}
    ix = sub.add_parser("index", help="write a manifest row for every DICOM, NIfTI or image file in a folder", **kw)
    ix.add_argument("folder", help="folder to index (searched recursively)")
    ix.add_argument("--out", help="output CSV (default manifest.csv)")
    ix.add_argument("--salt", help="secret for hashing patient IDs (default $MEDCLASS_SALT, else random)")
    ix.add_argument("--patient-pattern", help="regex on the relative path giving the patient for non-DICOM files")
    ix.add_argument("--header-only", action="store_true", help="read DICOM headers only (fast; no decode check)")
    ix.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this")
    ix.add_argument("--workers", type=int, default=4, help="decoding processes")
    ix.set_defaults(func=cmd_index)

    sp = sub.add_parser("split", help="add a train/val/test split column to a manifest, by patient", **kw)
    sp.add_argument("manifest", help="CSV manifest")
    sp.add_argument("--by", default="patient", help="column kept together (patient = patient_id; none = by row)")
    sp.add_argument("--stratify", default="label", help="column whose class proportions are kept ('' for none)")
    sp.add_argument("--val", type=float, default=0.1, help="validation share")
    sp.add_argument("--test", type=float, default=0.2, help="test share")
    sp.add_argument("--seed", type=int, default=0, help="seed of the split")
    sp.add_argument("--out", help="output CSV (default: overwrite the manifest)")
    sp.set_defaults(func=cmd_split)

    au = sub.add_parser("audit", help="duplicates, near-duplicates and patient leakage across splits; a census", **kw)
    au.add_argument("spec", help="catalog name, .npz, folder or .csv manifest")
    au.add_argument("--strict", action="store_true", help="exit 1 when leakage is found")
    au.add_argument("--near-distance", type=int, default=4, help="perceptual-hash distance counted as near-duplicate")
    au.add_argument(
        "--min-correlation",
        type=float,
        default=0.97,
        help="thumbnail correlation a hash match needs to count as a near duplicate",
    )
    au.add_argument("--label-column", metavar="COL", help="manifest column holding the label (default: label)")
    au.add_argument("--group-column", metavar="COL", help="manifest group column (default: patient_id, else group_id)")
    au.add_argument("--json", help="also write the findings as JSON")
    au.set_defaults(func=cmd_audit)
