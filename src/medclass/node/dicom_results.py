"""A series' classification as DICOM objects in its own study: a Comprehensive SR and a Secondary Capture.

The **Structured Report** (Comprehensive SR, built and checked by highdicom) joins the source study (same
patient and study, a new series) and lists the source instances in its evidence and as IMAGE items. Its
content tree, under a "Diagnostic imaging report" container, holds:

* ``Finding`` (DCM 121071): the decision at the operating threshold, a class name;
* ``Calibrated probability`` per class and the ``Operating threshold`` (NUM, unit UCUM ``1``);
* ``Urgency`` (NUM): the triage key (P(positive class) for a binary model);
* ``Referral to a radiologist``: SNOMED CT Yes/No, from the checkpoint's conformal sets;
* ``Algorithm Name`` (DCM 111001), ``Algorithm Version`` (DCM 111003), ``Training data`` (TEXT);
* ``Intended use`` (TEXT): "NOT FOR DIAGNOSTIC USE", the model card's intended-use sentence;
* ``Source of Measurement`` (DCM 121112) IMAGE items, one per source instance.

Codes of concepts DICOM has none for use the private coding scheme ``99MEDCLASS`` (declared in the
objects' Coding Scheme Identification Sequence).

The **Secondary Capture** is the heat map (Grad-CAM) over the classified image, an RGB picture with a banner
burned in: "medclass heat map - NOT FOR DIAGNOSTIC USE", the finding and probability. It references its source
image and says ``BurnedInAnnotation YES``.

UIDs of both objects derive from the source series' UID, so classifying a series again (after a crash
between storing and recording) gives the same instances: the PACS keeps one of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEME = "99MEDCLASS"
DISCLAIMER = "NOT FOR DIAGNOSTIC USE"
MANUFACTURER = "medclass"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902


@dataclass
class SeriesResult:
    """What the node concluded about one series (the input of :func:`build_sr` and the worklist's row).

    Attributes:
        label: The decision at the operating threshold (class name; labels joined by ``+`` for multi-label).
        probs: Calibrated probability per class name.
        threshold: The operating threshold (``None`` for argmax decisions).
        urgency: The triage key (higher = read first).
        refer: True when the case should go to a radiologist (``None`` when the model has no conformal sets).
        model: ``name``, ``version`` (medclass), ``training_data`` (name and hash), ``intended_use``.
        source_index: Which image of the series the result (and heat map) is from.
        triage_classes: The classes whose probability makes the urgency.
    """

    label: str
    probs: dict[str, float]
    threshold: float | list[float] | None
    urgency: float
    refer: bool | None
    model: dict[str, Any]
    source_index: int = 0
    triage_classes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "label": self.label,
            "probs": self.probs,
            "threshold": self.threshold,
            "urgency": self.urgency,
            "refer": self.refer,
            "model": self.model,
            "source_index": self.source_index,
            "triage_classes": self.triage_classes,
        }


def derived_uid(series_uid: str, what: str) -> str:
    """A UID derived from a source series' UID and ``what`` (``sr-series``, ``sr``, ``sc-series``, ``sc``)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[series_uid, what, "medclass-node"]))


#: Type 2 attributes of the patient and study that highdicom copies from the sources; empty when a source lacks them.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)


def _conformant(value: Any, vr: str) -> str:
    """A DA/TM value as DICOM writes it: old ``11:20:00``/``2004.01.19`` forms without separators, else empty."""
    from pydicom.valuerep import DA, TM

    text = str(value or "").strip()
    bare = text.replace(":", "") if vr == "TM" else text.replace(".", "").replace("-", "")
    for candidate in (bare, text):
        try:
            (DA if vr == "DA" else TM)(candidate)
        except ValueError:
            continue
        return candidate
    return ""


def complete_header(ds: Any) -> Any:
    """A copy of a source header with the patient and study attributes of type 2 present (empty if missing) and
    dates and times in the form highdicom accepts (some older files write ``HH:MM:SS``)."""
    import copy

    out = copy.copy(ds)
    for keyword in _TYPE2:
        if keyword not in out:
            setattr(out, keyword, "")
    if "SpecificCharacterSet" in out and not out.SpecificCharacterSet:
        del out.SpecificCharacterSet  # empty means the default repertoire
    for keyword in ("PatientBirthDate", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime"):
        if keyword in out and out[keyword].value:
            vr = "TM" if keyword.endswith("Time") else "DA"
            setattr(out, keyword, _conformant(out[keyword].value, vr))
    return out


def _copy_deidentification(obj: Any, source: Any) -> None:
    """Carry a de-identified source's method over (type 1C when ``PatientIdentityRemoved`` is ``YES``)."""
    if str(obj.get("PatientIdentityRemoved", "")).upper() != "YES":
        return
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if keyword in source:
            setattr(obj, keyword, source[keyword].value)
    if "DeidentificationMethod" not in obj and "DeidentificationMethodCodeSequence" not in obj:
        obj.DeidentificationMethod = "de-identified source; method not stated"


def _code(value: str, meaning: str) -> Any:
    from pydicom.sr.coding import Code

    return Code(value[:16], SCHEME, meaning[:64])


def _coding_schemes() -> list[Any]:
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return [
        CodingSchemeIdentificationItem(
            designator=SCHEME, name="medclass node concepts", responsible_organization="medclass project"
        )
    ]


def _threshold_value(threshold: float | list[float] | None) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, list | tuple):
        return float(threshold[0]) if len(threshold) == 1 else None
    return float(threshold)


def sr_content(result: SeriesResult, sources: Sequence[Any]) -> Any:
    """The SR's root CONTAINER content item (see the module docstring)."""
    from highdicom.sr import (
        CodeContentItem,
        ContainerContentItem,
        ImageContentItem,
        NumContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )
    from pydicom.sr.coding import Code

    contains = RelationshipTypeValues.CONTAINS
    unit = Code("1", "UCUM", "no units")
    items: list[Any] = [
        CodeContentItem(Code("121071", "DCM", "Finding"), _code(result.label, result.label), contains),
    ]
    for name, p in result.probs.items():
        concept = _code(f"prob-{name}", f"Calibrated probability of {name}")
        items.append(NumContentItem(concept, p, unit, None, contains))
    t = _threshold_value(result.threshold)
    if t is not None:
        items.append(NumContentItem(_code("threshold", "Operating threshold"), t, unit, None, contains))
    items.append(NumContentItem(_code("urgency", "Urgency (triage key)"), result.urgency, unit, None, contains))
    if result.refer is not None:
        yes_no = Code("373066001", "SCT", "Yes") if result.refer else Code("373067005", "SCT", "No")
        items.append(CodeContentItem(_code("referral", "Referral to a radiologist"), yes_no, contains))
    model = result.model
    items.append(TextContentItem(Code("111001", "DCM", "Algorithm Name"), str(model.get("name", "?")), contains))
    items.append(TextContentItem(Code("111003", "DCM", "Algorithm Version"), str(model.get("version", "?")), contains))
    data = model.get("training_data") or {}
    trained_on = ", ".join(f"{k} {v}" for k, v in data.items()) or "unknown"
    items.append(TextContentItem(_code("training-data", "Training data"), trained_on[:1000], contains))
    use = f"{DISCLAIMER}. {model.get('intended_use', '')}".strip()
    items.append(TextContentItem(_code("intended-use", "Intended use"), use[:1000], contains))
    source_name = Code("121112", "DCM", "Source of Measurement")
    for ds in sources:
        items.append(ImageContentItem(source_name, ds.SOPClassUID, ds.SOPInstanceUID, relationship_type=contains))
    root = ContainerContentItem(Code("18748-4", "LN", "Diagnostic imaging report"), template_id=None)
    root.ContentSequence = items
    return root


def build_sr(result: SeriesResult, sources: Sequence[Any], series_uid: str) -> Any:
    """The Comprehensive SR of ``result`` for the source series ``series_uid`` (``sources``: its headers).

    Raises:
        ValueError: highdicom refuses the content or the sources (e.g. several studies).
    """
    from highdicom.sr import ComprehensiveSR

    from medclass import __version__

    sources = [complete_header(ds) for ds in sources]
    sr = ComprehensiveSR(
        evidence=sources,
        content=sr_content(result, sources),
        series_instance_uid=derived_uid(series_uid, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid(series_uid, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"medclass classification ({DISCLAIMER})",
        manufacturer_model_name=str(result.model.get("name", "medclass"))[:64],
        software_versions=f"medclass {__version__}",
        coding_schemes=_coding_schemes(),
    )
    _copy_deidentification(sr, sources[0])
    return sr


def _banner_picture(picture: np.ndarray, lines: list[str]) -> np.ndarray:
    """``picture`` ``(H, W, 3)`` scaled up to at least 384 px wide, with ``lines`` burned in on a banner on top."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(picture)
    scale = max(1, int(np.ceil(384 / max(1, img.width))))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    font = ImageFont.load_default()
    line_h = 14
    banner = Image.new("RGB", (img.width, line_h * len(lines) + 8), (0, 0, 0))
    draw = ImageDraw.Draw(banner)
    for i, text in enumerate(lines):
        draw.text((4, 4 + i * line_h), text, fill=(255, 255, 0) if i == 0 else (255, 255, 255), font=font)
    out = Image.new("RGB", (img.width, banner.height + img.height))
    out.paste(banner, (0, 0))
    out.paste(img, (0, banner.height))
    return np.asarray(out, dtype=np.uint8)


def build_sc(result: SeriesResult, overlay_rgb: np.ndarray, source: Any, series_uid: str) -> Any:
    """The Secondary Capture of the heat-map overlay ``(H, W, 3)`` ``uint8`` of the image ``source`` (a header).

    Raises:
        ValueError: highdicom refuses the image.
    """
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset

    p = max(result.probs.values()) if result.label not in result.probs else result.probs[result.label]
    lines = [
        f"medclass heat map (Grad-CAM) - {DISCLAIMER}",
        f"finding: {result.label}  p={p:.3f}  urgency={result.urgency:.3f}" + ("  REFER" if result.refer else ""),
        f"model: {result.model.get('name', '?')}  medclass {result.model.get('version', '?')}",
    ]
    picture = _banner_picture(np.ascontiguousarray(overlay_rgb, dtype=np.uint8), lines)
    sc = SCImage.from_ref_dataset(
        ref_dataset=complete_header(source),
        pixel_array=picture,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),  # replaced below: highdicom needs a value, the source's is the truth
        series_instance_uid=derived_uid(series_uid, "sc-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=derived_uid(series_uid, "sc"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=f"medclass heat map ({DISCLAIMER})",
        software_versions=f"medclass {result.model.get('version', '?')}",
    )
    sc.PatientOrientation = source.get("PatientOrientation", "") or ""  # type 2: empty when the source had none
    sc.Laterality = source.get("Laterality", "") or ""  # type 2C: the source's, else empty
    _copy_deidentification(sc, source)
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ImageComments = f"Heat map of the medclass classification; {DISCLAIMER}"
    sc.DerivationDescription = "Grad-CAM heat map over the classified image, labels burned in"
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    return sc
