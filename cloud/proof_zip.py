"""A proof bundle's container: the canonical zip of its files, and the offline check of a
bundle as received (`protocols.proof` checks the files; this checks the zip around them).

The zip is canonical (files sorted, stored uncompressed, fixed dates and attributes), so the
same files always make the same bytes: the checker rebuilds it from the files it read and
compares, and a changed byte in the container's own structure is found as well as one in a
file. Only the standard library and `protocols`: ``boilertwin verify-proof`` needs nothing
of the cloud's stack."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.proof import Report, check_files

MAX_BUNDLE_FILES = 20_000
MAX_FILE_BYTES = 64 * 1024 * 1024


def pack(files: Mapping[str, bytes]) -> bytes:
    """The canonical zip of `files`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, files[name])
    return out.getvalue()


def unpack(data: bytes) -> dict[str, bytes]:
    """The files of a bundle (bounded in count and size); raises on a damaged zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_BUNDLE_FILES:
            raise ValueError(f"more than {MAX_BUNDLE_FILES} files")
        out = {}
        for info in infos:
            if info.file_size > MAX_FILE_BYTES:
                raise ValueError(f"{info.filename} is larger than {MAX_FILE_BYTES} bytes")
            out[info.filename] = archive.read(info)
        return out


def check_bundle(data: bytes, cloud_key: Ed25519PublicKey | None = None) -> Report:
    """Check a bundle as received: the container, then its files (`check_files`)."""
    report = Report()
    try:
        files = unpack(data)
    except Exception as exc:
        report.problems.append(f"the bundle is not a readable zip: {exc}")
        return report
    canonical_zip = pack(files)
    if canonical_zip != data:
        at = next(
            (i for i, (a, b) in enumerate(zip(canonical_zip, data, strict=False)) if a != b),
            min(len(canonical_zip), len(data)),
        )
        report.problems.append(
            f"the zip container differs from the canonical one at byte {at} "
            "(changed outside its files)"
        )
    return check_files(files, cloud_key, report)
