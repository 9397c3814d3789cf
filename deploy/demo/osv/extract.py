#!/usr/bin/env python3
"""Copies the OSV records `make demo` needs out of the project's test data,
with where each came from (SOURCES.md). Run from the repository root:

    python3 deploy/demo/osv/extract.py ../shared/testdata ID...

The IDs are the vulnerabilities the demo finds when run against the whole
test data set (`make demo OSV="../shared/testdata/osv/PyPI/all.zip ..."`):
matching against these records alone gives the same findings. Where a
record is in several sources, the one modified last is kept. Standard
library only.
"""

import csv
import json
import os
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ZIPS = ["osv/PyPI/all.zip", "osv/Go/all.zip", "osv/crates-io/all.zip"]
# The commits the test data's from-testdata records were cut out at (its SOURCES.md).
FIXTURE_COMMITS = {
    "google/osv-scanner": "add393a2e051ea46b7d94aa96e468bbdde1e621d",
    "google/osv-scalibr": "c2094f2d68e3994551d9998a54e2e97985a18a39",
    "google/osv.dev": "7e6c189879195a8aad33ccbf27fe9344f3479632",
}


def main():
    testdata, ids = sys.argv[1], sorted(set(sys.argv[2:]))
    manifest = {}
    with open(os.path.join(testdata, "MANIFEST.tsv"), newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            manifest[row["file"]] = row
    index = {}
    with open(os.path.join(testdata, "osv/from-testdata/INDEX.tsv"), newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            index[row["id"]] = row
    found = {}
    for rel in ZIPS:
        with zipfile.ZipFile(os.path.join(testdata, rel)) as z:
            names = set(z.namelist())
            for vid in ids:
                if f"{vid}.json" in names:
                    data = z.read(f"{vid}.json")
                    # MANIFEST.tsv names the crates.io zip by its ecosystem.
                    m = manifest.get(f"{rel}!{vid}.json") or manifest[f"{rel.replace('crates-io', 'crates.io')}!{vid}.json"]
                    source = f"{m['repository']} @ {m['commit']}, `{m['path_in_repository']}`, {m['license']}"
                    keep(found, vid, data, source)
    for vid in ids:
        path = os.path.join(testdata, "osv/from-testdata", f"{vid}.json")
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            i = index[vid]
            commit = FIXTURE_COMMITS.get(i["repository"], "?")
            source = f"{i['repository']} @ {commit}, `{i['path_in_repository']}` (a test fixture), Apache-2.0"
            keep(found, vid, data, source)
    missing = [v for v in ids if v not in found]
    if missing:
        sys.exit(f"not in the test data: {', '.join(missing)}")
    lines = [
        "# OSV records of the demo",
        "",
        "Public advisories copied byte for byte from the project's test data",
        "(`../shared/testdata`, see its SOURCES.md) by `extract.py`: the records",
        "the demo's images and SBOM match, so `make demo` needs nothing outside",
        "this repository. Each record's origin and licence:",
        "",
        "| record | source (repository @ commit, path, licence) |",
        "|---|---|",
    ]
    for vid in ids:
        data, source = found[vid]
        with open(os.path.join(HERE, f"{vid}.json"), "wb") as f:
            f.write(data)
        lines.append(f"| `{vid}.json` | {source} |")
    with open(os.path.join(HERE, "SOURCES.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(ids)} records written to {HERE}")


def keep(found, vid, data, source):
    modified = json.loads(data).get("modified", "")
    if vid not in found or modified > json.loads(found[vid][0]).get("modified", ""):
        found[vid] = (data, source)


if __name__ == "__main__":
    main()
