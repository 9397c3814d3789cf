#!/usr/bin/env python3
"""Writes the demo fleet for `make demo`: OCI image layouts that share base
layers, and the watch file `strata serve --watch` reads.

    python3 deploy/demo/fleet.py OUTDIR

Six images on two bases (Alpine 3.12 from `alpine-rootfs/`, and a Debian 10
base), each adding a layer of its own: the base layers are shared, so the
cluster analyses each of them once however many images contain them. The
package versions are real ones with advisories in ../shared/testdata/osv
(CVE-2012-2812 libexif, CVE-2022-27449 mariadb, CVE-2024-1013 unixodbc).

Standard library only, and deterministic (fixed mtimes, sorted entries), so
the digests are the same on every run and the second run is all cache hits.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))

DEBIAN_OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 10 (buster)"\nNAME="Debian GNU/Linux"\n'
    'VERSION_ID="10"\nVERSION="10 (buster)"\nVERSION_CODENAME=buster\nID=debian\n'
)


def dpkg_entry(name, version, source=None):
    lines = [f"Package: {name}", "Status: install ok installed", "Architecture: amd64"]
    if source:
        lines.append(f"Source: {source}")
    lines.append(f"Version: {version}")
    return "\n".join(lines) + "\n\n"


DEBIAN_BASE = dpkg_entry("base-files", "10.3+deb10u13") + dpkg_entry("libc6", "2.28-10+deb10u2", "glibc")


def apk_entry(name, version, origin):
    return f"P:{name}\nV:{version}\nA:x86_64\no:{origin}\nT:{name}\n\n"


def read(path):
    with open(os.path.join(HERE, path), "rb") as f:
        return f.read()


def layer(files):
    """A gzip layer of `files` (path -> bytes); returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            data = files[path]
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    blob = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
    return blob, "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def write_blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    d = os.path.join(out, "blobs", "sha256")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def write_image(out, tag, layers):
    """An OCI layout at `out` holding one image of `layers` under `tag`."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    descs, diff_ids = [], []
    for blob, diff_id in layers:
        d = write_blob(out, blob)
        d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        descs.append(d)
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        sort_keys=True,
    ).encode()
    config_desc = write_blob(out, config)
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": descs,
        },
        sort_keys=True,
    ).encode()
    manifest_desc = write_blob(out, manifest)
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [manifest_desc]}, f)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: fleet.py OUTDIR")
    out = os.path.abspath(sys.argv[1])
    apk_db = read("alpine-rootfs/lib/apk/db/installed").decode()
    # The Alpine base without the two vulnerable packages; images add them back.
    base_apk = "\n\n".join(
        e for e in apk_db.strip().split("\n\n") if "\no:mariadb" not in e and "\no:libexif" not in e
    ) + "\n\n"
    alpine_base = layer(
        {
            "etc/os-release": read("alpine-rootfs/etc/os-release"),
            "etc/alpine-release": read("alpine-rootfs/etc/alpine-release"),
            "lib/apk/db/installed": base_apk.encode(),
        }
    )
    alpine_tools = layer({"usr/share/doc/strata-demo/base2": b"a second shared base layer\n"})
    debian_base = layer(
        {"etc/os-release": DEBIAN_OS_RELEASE.encode(), "var/lib/dpkg/status": DEBIAN_BASE.encode()}
    )

    def apk_app(name, extra):
        return layer(
            {
                "lib/apk/db/installed": (base_apk + extra).encode(),
                f"srv/{name}/README": f"the {name} service\n".encode(),
            }
        )

    def deb_app(name, extra):
        return layer(
            {
                "var/lib/dpkg/status": (DEBIAN_BASE + extra).encode(),
                f"srv/{name}/README": f"the {name} service\n".encode(),
            }
        )

    images = {
        "gallery": [alpine_base, alpine_tools, apk_app("gallery", apk_entry("libexif", "0.6.19-r0", "libexif"))],
        "orders-db": [
            alpine_base,
            alpine_tools,
            apk_app("orders-db", apk_entry("mariadb-common", "10.4.24-r0", "mariadb")),
        ],
        "thumbnailer": [
            alpine_base,
            alpine_tools,
            apk_app("thumbnailer", apk_entry("libexif", "0.6.19-r0", "libexif")),
        ],
        "edge-proxy": [alpine_base, apk_app("edge-proxy", "")],
        "reports": [debian_base, deb_app("reports", dpkg_entry("unixodbc", "2.3.6-0.1", "unixodbc"))],
        "billing": [debian_base, deb_app("billing", "")],
    }
    refs = []
    for name, layers in images.items():
        path = os.path.join(out, name)
        write_image(path, "1.0", layers)
        refs.append(f"oci-dir:{path}:1.0")
    with open(os.path.join(out, "images.txt"), "w") as f:
        f.write("# The demo fleet (deploy/demo/fleet.py): one image reference per line.\n")
        f.write("\n".join(refs) + "\n")
    print(f"demo fleet: {len(refs)} images in {out}, watch file {out}/images.txt")


if __name__ == "__main__":
    main()
