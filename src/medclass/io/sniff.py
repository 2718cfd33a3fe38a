"""Tell an image file's format from its first bytes (magic numbers), not from its name.

DICOM needs the most care: a Part 10 file has ``DICM`` at byte 128, but many real files have no
preamble and no file meta group and simply start with the first data element. Those are accepted
when two consecutive data elements parse plausibly (see :func:`dicom_offset`). Only a few hundred
bytes are read (a second small read when the first element is long, and up to 4 KiB of a gzip file).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

FORMATS = ("dicom", "nifti", "png", "jpeg", "tiff", "bmp", "npy")

_HEAD = 512
#: Groups a dataset without file meta plausibly starts with (file meta, identification, patient,
#: acquisition, relationship, image pixel).
_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
_UNDEFINED = 0xFFFFFFFF
#: Stray bytes tolerated before a preamble-less dataset (seen in real files, e.g. one junk byte).
_MAX_JUNK = 16
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def element_header(buf: bytes, pos: int, *, explicit: bool) -> tuple[int, int, int] | None:
    """Parse the little-endian data element header at ``pos``: ``(group, element, next_pos)``.

    None when it does not fit in ``buf``, has an unknown VR (explicit) or an untrusted length
    (undefined, odd, or a group length other than 4).
    """
    if pos + 8 > len(buf):
        return None
    group, elem = struct.unpack_from("<HH", buf, pos)
    if explicit:
        vr = buf[pos + 4 : pos + 6]
        if vr not in _VRS:
            return None
        if vr in _LONG_VRS:
            if pos + 12 > len(buf):
                return None
            (length,) = struct.unpack_from("<I", buf, pos + 8)
            header = 12
        else:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            header = 8
    else:
        (length,) = struct.unpack_from("<I", buf, pos + 4)
        header = 8
    if length == _UNDEFINED or length % 2 or (elem == 0 and length != 4):
        return None  # undefined length this early, odd lengths and bad group lengths: not trusted
    return group, elem, pos + header + length


def _plausible(fh: BinaryIO, buf: bytes, offset: int, *, explicit: bool, size: int) -> bool:
    """Whether two consecutive, ascending data elements parse at ``offset`` and fit in the file."""
    first = element_header(buf, offset, explicit=explicit)
    if first is None or first[0] not in _FIRST_GROUPS or first[2] + 8 > size:
        return False
    group, elem, nxt = first
    if nxt + 12 <= len(buf):
        chunk = buf[nxt : nxt + 12]
    else:  # the first element is long: read just the second element's header
        fh.seek(nxt)
        chunk = fh.read(12)
    second = element_header(chunk, 0, explicit=explicit)
    if second is None:
        return False
    g2, e2, end = second
    ascending = g2 > group or (g2 == group and e2 > elem)
    return ascending and g2 <= 0x7FE0 and nxt + end <= size


def dicom_offset(path: str | Path) -> int | None:
    """Where a preamble-less DICOM dataset starts in a file (usually 0), or None if it does not look like one.

    The file must start (after at most :data:`_MAX_JUNK` stray bytes, explicit VR only) with a
    little-endian data element of group 0002, 0008, 0010, 0018, 0020 or 0028, followed by a second
    element with a higher tag; both lengths must fit in the file.

    Raises:
        OSError: The file cannot be read.
    """
    with open(path, "rb") as fh:
        buf = fh.read(_HEAD)
        size = fh.seek(0, 2)
        for offset in range(min(_MAX_JUNK, max(len(buf) - 8, 0))):
            for explicit in (True, False) if offset == 0 else (True,):
                if _plausible(fh, buf, offset, explicit=explicit, size=size):
                    return offset
    return None


def _nifti(head: bytes) -> bool:
    """NIfTI-1 (``sizeof_hdr`` 348, magic ``n+1``/``ni1`` at 344) or NIfTI-2 (540, ``n+2`` at 4)."""
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return struct.unpack_from("<i", head)[0] == 348 or struct.unpack_from(">i", head)[0] == 348
    if len(head) >= 12 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return struct.unpack_from("<i", head)[0] == 540 or struct.unpack_from(">i", head)[0] == 540
    return False


def _gunzip_head(path: Path, n: int) -> bytes:
    """The first ``n`` decompressed bytes of a gzip file (b"" when it does not decompress)."""
    with open(path, "rb") as fh:
        raw = fh.read(4096)
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, n)
    except zlib.error:
        return b""


def detect_format(path: str | Path) -> str | None:
    """The image format of a file, judged by its content.

    Args:
        path: The file.

    Returns:
        One of ``"dicom"``, ``"nifti"``, ``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"``, ``"npy"``, or
        None when the content matches none of them (the name is never consulted).

    Raises:
        OSError: The file is missing or unreadable.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    if head[128:132] == b"DICM":  # before the start-of-file magics: DICOM-TIFF dual files are DICOM
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"BM") and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _BMP_DIB_SIZES:
        return "bmp"
    if _nifti(head) or (head.startswith(b"\x1f\x8b") and _nifti(_gunzip_head(path, 544))):
        return "nifti"
    if dicom_offset(path) is not None:
        return "dicom"
    return None
