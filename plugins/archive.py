"""Build the krew archive of kubectl-vram reproducibly and print its sha256 (plugins/vram.yaml).

    python plugins/archive.py [OUTPUT]     # default: dist/kubectl-vram.tar.gz

The archive holds the shim and the licence notice only; the same bytes on every run (fixed
mtimes, owners and gzip header), so the sha256 in the krew manifest can be checked in a test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

PLUGINS = Path(__file__).resolve().parent
SHIM = PLUGINS / "kubectl-vram"
NOTICE = b"kubectl-vram is part of vram-operator, licensed under the Apache License 2.0.\n"


def archive_bytes() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in (("kubectl-vram", SHIM.read_bytes(), 0o755), ("LICENSE", NOTICE, 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def main(argv: list[str]) -> int:
    output = Path(argv[0]) if argv else Path("dist") / "kubectl-vram.tar.gz"
    data = archive_bytes()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    print(hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
