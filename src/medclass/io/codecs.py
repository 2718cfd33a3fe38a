"""Look inside compressed DICOM pixel data without decoding it.

Two questions are answered from the first bytes of each fragment: which codec (transfer syntax)
produced it, for files that lack a file meta group; and how large an image its header declares, so
that a small codestream claiming e.g. 60000 x 60000 pixels is refused before a decoder allocates
memory for it. Recognised: JPEG (baseline, extended, lossless), JPEG-LS, JPEG 2000 and HTJ2K
(codestream or JP2 box) and RLE.
"""

from __future__ import annotations

from collections.abc import Iterator

JPEG_BASELINE, JPEG_EXTENDED = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS, JPEG_SV1 = "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"
JPEG_LS, JPEG_LS_NEAR = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS, J2K = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS, HTJ2K = "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203"
RLE = "1.2.840.10008.1.2.5"

_J2K_MAGIC = b"\xff\x4f\xff\x51"
_JP2_MAGIC = b"jP  \r\n\x87\n"
#: JPEG start-of-frame markers (all but the differential/arithmetic ones DICOM never uses), plus JPEG-LS.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length


def fragments(value: bytes) -> Iterator[bytes]:
    """The fragments of encapsulated pixel data, after the Basic Offset Table item."""
    from pydicom.encaps import generate_fragments

    items = generate_fragments(value)
    next(items, None)  # the Basic Offset Table (possibly empty)
    yield from items


def _jpeg_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """``(marker, position)`` of the JPEG marker segments up to the first start of scan."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        yield marker, pos
        if marker == 0xDA:
            return
        pos += 2 if marker in _STANDALONE else 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def _start_of_scan(data: bytes) -> int | None:
    """``Ss`` of the first start-of-scan segment: the lossless JPEG predictor, or JPEG-LS NEAR."""
    sos = next((p for m, p in _jpeg_markers(data) if m == 0xDA), None)
    if sos is None or sos + 5 >= len(data):
        return None
    at = sos + 5 + 2 * data[sos + 4]  # after Ls, Ns and the Ns component specifications
    return data[at] if at < len(data) else None


def _j2k_header(data: bytes) -> bytes:
    """The main header of a JPEG 2000 codestream (also inside a JP2 box), or b""."""
    start = data.find(_J2K_MAGIC, 0, 4096)
    return data[start : start + 1024] if start >= 0 else b""


def sniff_codec(fragment: bytes) -> str | None:
    """The transfer syntax UID that produced a fragment, or None when it is not recognised.

    JPEG 2000 counts as lossless when its COD marker selects the reversible 5-3 wavelet; lossless
    JPEG with predictor 1 is the common "SV1" syntax; JPEG-LS is lossless when NEAR is 0.
    """
    if fragment.startswith(_J2K_MAGIC) or fragment[4:12] == _JP2_MAGIC:
        header = _j2k_header(fragment)
        cod = header.find(b"\xff\x52")
        reversible = cod >= 0 and cod + 13 < len(header) and header[cod + 13] == 1
        if b"\xff\x50" in header:  # a CAP marker: High-Throughput JPEG 2000
            return HTJ2K_LOSSLESS if reversible else HTJ2K
        return J2K_LOSSLESS if reversible else J2K
    if fragment.startswith(b"\xff\xd8"):
        for marker, _ in _jpeg_markers(fragment):
            if marker == 0xC0:
                return JPEG_BASELINE
            if marker in (0xC1, 0xC2):
                return JPEG_EXTENDED
            if marker == 0xC3:
                return JPEG_SV1 if _start_of_scan(fragment) == 1 else JPEG_LOSSLESS
            if marker == 0xF7:
                return JPEG_LS_NEAR if _start_of_scan(fragment) else JPEG_LS
        return None
    if len(fragment) >= 64:  # RLE: a 64-byte header, 1-15 segments, the first at offset 64
        n, first = int.from_bytes(fragment[:4], "little"), int.from_bytes(fragment[4:8], "little")
        if 1 <= n <= 15 and first == 64:
            return RLE
    return None


def declared_size(fragment: bytes) -> tuple[int, int, int] | None:
    """``(rows, columns, components)`` a JPEG, JPEG-LS or JPEG 2000 header declares, else None.

    A fragment that does not start a codestream (a continuation fragment, RLE) gives None; so
    does a JPEG whose height is deferred to a DNL marker (0 in the frame header).
    """
    if fragment.startswith(b"\xff\xd8"):
        for marker, pos in _jpeg_markers(fragment):
            if marker in _SOF and pos + 10 <= len(fragment):
                rows = int.from_bytes(fragment[pos + 5 : pos + 7], "big")
                cols = int.from_bytes(fragment[pos + 7 : pos + 9], "big")
                return (rows, cols, fragment[pos + 9]) if rows else None
        return None
    header = _j2k_header(fragment) if fragment.startswith(_J2K_MAGIC) or fragment[4:12] == _JP2_MAGIC else b""
    if len(header) >= 44:  # SOC, then SIZ: marker, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, 4 tile fields, Csiz
        x, y, x0, y0 = (int.from_bytes(header[8 + 4 * i : 12 + 4 * i], "big") for i in range(4))
        return max(y - y0, 0), max(x - x0, 0), int.from_bytes(header[40:42], "big")
    return None
