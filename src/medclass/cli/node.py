"""``medclass node``: a DICOM node that classifies what a PACS sends it and stores SR and heat map back."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from medclass.errors import ConfigError


def _read_secret(path: str | None, what: str) -> str | None:
    if not path:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {what} file ({err.strerror})") from None
    if not value:
        raise ConfigError(f"{path}: the {what} file is empty")
    return value


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_node(args: argparse.Namespace) -> int:
    import medclass
    from medclass.node.pacs import DicomSender, OrthancMarker, StowSender, parse_pacs
    from medclass.node.scp import Node

    if len(args.ae_title) > 16 or not args.ae_title.strip():
        raise ConfigError(f"--ae-title {args.ae_title}: an AE title has 1 to 16 characters")
    if bool(args.pacs) == bool(args.dicomweb):
        raise ConfigError("give one of --pacs HOST:PORT:AET or --dicomweb URL (where the results go)")
    sender: Any
    if args.pacs:
        host, port, aet = parse_pacs(args.pacs)
        sender = DicomSender(host, port, aet, calling_aet=args.ae_title)
    else:
        sender = StowSender(args.dicomweb, token=_read_secret(args.token_file, "token"))
    marker = None
    if args.orthanc:
        marker = OrthancMarker(args.orthanc, auth=_read_secret(args.orthanc_auth_file, "Orthanc credentials"))
    predictor = medclass.load(args.checkpoint)
    node = Node(
        predictor,
        args.state or Path(args.checkpoint) / "node",
        sender,
        ae_title=args.ae_title,
        port=args.port,
        host=args.host,
        allowed_aets=_csv(args.allow_aet),
        modalities=_csv(args.modalities),
        marker=marker,
        settle_s=args.settle,
        heatmap=not args.no_heatmap,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    node.start()
    try:
        done.wait()
    finally:
        node.stop()
    return 0


def add_node_command(sub: Any, parents: list[argparse.ArgumentParser], formatter: type) -> None:
    """Add ``node`` to the ``medclass`` subcommand parser."""
    p = sub.add_parser(
        "node",
        help="a DICOM node: classify images a PACS sends, store SR and heat map in the study",
        parents=parents,
        formatter_class=formatter,
    )
    p.add_argument("--checkpoint", required=True, help="run folder")
    p.add_argument("--ae-title", default="MEDCLASS", help="the node's AE title")
    p.add_argument("--port", type=int, default=11112, help="DICOM port to listen on")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--pacs", help="send results by C-STORE to HOST:PORT:AET")
    p.add_argument("--dicomweb", help="send results by STOW-RS to this DICOMweb root (e.g. http://pacs/dicom-web)")
    p.add_argument("--token-file", help="file holding the bearer token for --dicomweb")
    p.add_argument("--orthanc", help="Orthanc REST root: set the study's medclass-urgency/-triage metadata there")
    p.add_argument("--orthanc-auth-file", help="file holding user:password for --orthanc")
    p.add_argument("--state", help="queue and received files (default RUN/node); keep it across restarts")
    p.add_argument("--allow-aet", help="comma-separated calling AE titles allowed to send (default: any)")
    p.add_argument("--modalities", help="comma-separated modalities to classify (default: any image)")
    p.add_argument(
        "--settle", type=float, default=0.5, help="seconds without new instances of a series before it is classified"
    )
    p.add_argument("--no-heatmap", action="store_true", help="store the SR only, no heat-map Secondary Capture")
    p.set_defaults(func=cmd_node)
