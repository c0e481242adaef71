"""Test certificates made with openssl: a CA, a server certificate and a client certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path

CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_certificates(directory: Path, server_names: str) -> None:
    """ca.crt/.key, server.crt/.key (subjectAltName `server_names`), client.crt/.key."""

    def openssl(*args: str, stdin: str = "") -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True, input=stdin.encode()
        )

    openssl(
        "req",
        "-x509",
        *CURVE,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    )
    extensions = {
        "server": f"subjectAltName={server_names}",
        "client": "extendedKeyUsage=clientAuth",
    }
    for name, extension in extensions.items():
        openssl(
            "req", *CURVE, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            "/dev/stdin",
            stdin=extension + "\n",
        )
