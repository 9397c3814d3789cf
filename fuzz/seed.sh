#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ (not committed) with the committed seeds
# (fuzz/seeds/<target>/) and, when ../shared/testdata is present, real
# package databases, lockfiles, advisories and version vectors from it.
# Targets that choose a variant by their first byte get that byte prefixed
# here, as the committed seeds have it. Safe to run again: files are named
# by content, so nothing is copied twice.
#
# Usage: fuzz/seed.sh [TESTDATA_DIR]   (default: ../shared/testdata from the repository root)
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
testdata=${1:-"$fuzz_dir/../../shared/testdata"}
corpus="$fuzz_dir/corpus"

# add TARGET SELECTOR FILE: copy FILE into TARGET's corpus, prefixed by the
# selector byte (decimal; "-" for targets that take the file as it is).
add() {
    local target=$1 selector=$2 file=$3 tmp
    [ -f "$file" ] || return 0
    mkdir -p "$corpus/$target"
    tmp=$(mktemp)
    if [ "$selector" = "-" ]; then
        cat "$file" >"$tmp"
    else
        { printf "\\$(printf '%03o' "$selector")"; cat "$file"; } >"$tmp"
    fi
    mv "$tmp" "$corpus/$target/$(sha1sum "$tmp" | cut -c1-40)"
}

# The committed seeds.
for dir in "$fuzz_dir"/seeds/*/; do
    target=$(basename "$dir")
    mkdir -p "$corpus/$target"
    cp -n "$dir"/* "$corpus/$target/"
done

if [ ! -d "$testdata" ]; then
    echo "seed.sh: no $testdata; corpus holds the committed seeds only"
    exit 0
fi

pkgdb="$testdata/pkgdb"
# find_named GLOB...: files under pkgdb whose name matches any glob.
find_named() {
    local args=() first=1 g
    for g in "$@"; do
        if [ $first = 1 ]; then first=0; else args+=(-o); fi
        args+=(-name "$g")
    done
    find "$pkgdb" -type f \( "${args[@]}" \) 2>/dev/null
}

# OS databases and release files (selectors as in fuzz_targets/os_db.rs).
find "$pkgdb" -type f -path '*dpkg/status' | while read -r f; do add os_db 0 "$f"; done
find "$pkgdb" -type f -path '*status.d/*' ! -name '*.md5sums' | while read -r f; do add os_db 1 "$f"; done
find "$pkgdb" -type f -path '*apk*' -name 'installed' | while read -r f; do add os_db 2 "$f"; done
find_named os-release | while read -r f; do add os_db 3 "$f"; done

# rpm (fuzz_targets/rpm.rs).
find_named rpmdb.sqlite | while read -r f; do add rpm 0 "$f"; done
find_named 'Packages' 'Packages_*' | while read -r f; do add rpm 1 "$f"; done
find_named Packages.db | while read -r f; do add rpm 2 "$f"; done
for f in "$fuzz_dir"/../worker/src/analyzers/rpm/testdata/{rpmdb.sqlite,Packages-512,Packages-512-be}; do
    case $f in *.sqlite) add rpm 0 "$f" ;; *) add rpm 1 "$f" ;; esac
done

# npm (fuzz_targets/npm.rs).
find "$pkgdb" -type f -path '*node_modules/*' -name package.json | while read -r f; do add npm 0 "$f"; done
find_named package.json | grep -v node_modules | while read -r f; do add npm 1 "$f"; done || true
find_named package-lock.json npm-shrinkwrap.json | while read -r f; do add npm 2 "$f"; done
find_named yarn.lock | while read -r f; do add npm 3 "$f"; done
find_named pnpm-lock.yaml | while read -r f; do add npm 4 "$f"; done
for f in "$fuzz_dir"/../worker/src/analyzers/npm/testdata/*.json; do add npm 0 "$f"; done

# Other language files (fuzz_targets/lang_files.rs).
find_named METADATA | while read -r f; do add lang_files 0 "$f"; done
find_named PKG-INFO | while read -r f; do add lang_files 1 "$f"; done
find_named '*.gemspec' | while read -r f; do add lang_files 3 "$f"; done
for f in "$fuzz_dir"/../worker/src/analyzers/ruby/testdata/*.gemspec; do add lang_files 3 "$f"; done
find_named Gemfile.lock gems.locked | while read -r f; do add lang_files 4 "$f"; done
find_named installed.json | while read -r f; do add lang_files 5 "$f"; done
for f in "$fuzz_dir"/../worker/src/analyzers/php/testdata/*.json; do add lang_files 5 "$f"; done
find_named composer.lock | while read -r f; do add lang_files 6 "$f"; done
find_named '*.deps.json' | while read -r f; do add lang_files 7 "$f"; done
for f in "$fuzz_dir"/../worker/src/analyzers/dotnet/testdata/*.json; do add lang_files 7 "$f"; done
find_named Cargo.lock | while read -r f; do add lang_files 8 "$f"; done

# Java metadata as the archives hold it: the zip reader itself is seeded by
# the committed archives; pom.properties files are wrapped into jars here
# when python3 is present.
if command -v python3 >/dev/null; then
    find_named pom.properties | head -20 | while read -r f; do
        tmp=$(mktemp)
        python3 - "$f" "$tmp" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[1], "META-INF/maven/g/a/pom.properties")
EOF
        add java 0 "$tmp"
        rm -f "$tmp"
    done || true
fi

# The binary analysers: a real Rust binary built with cargo-auditable.
add binaries 1 "$fuzz_dir/../worker/src/analyzers/cargo_auditable/testdata/rustapp"

# OSV records: every one from other tools' test data, and a sample of each
# ecosystem's export (the zips hold thousands; 300 each keeps start-up quick).
for f in "$testdata"/osv/from-testdata/*.json; do add osv - "$f"; done
if command -v unzip >/dev/null; then
    for zip in "$testdata"/osv/*/all.zip; do
        tmpdir=$(mktemp -d)
        unzip -qq -o "$zip" -d "$tmpdir" || true
        find "$tmpdir" -type f -name '*.json' | sort | head -300 | while read -r f; do add osv - "$f"; done || true
        rm -rf "$tmpdir"
    done
fi

# SBOMs: the repository's own test inputs (syft's output) and goldens.
for f in "$fuzz_dir"/../coordinator/src/output/testdata/*.json "$fuzz_dir"/../coordinator/src/output/testdata/sbom.*.json.golden; do
    add sbom - "$f"
done
# Suppressions.
add suppress 0 "$fuzz_dir/../coordinator/src/suppress/testdata/strata-ignore.toml"
add suppress 1 "$fuzz_dir/../coordinator/src/suppress/testdata/example.openvex.json"

# Version vectors: each row's first two columns as "a\nb", under the scheme
# the file is named for (its index in Scheme::ALL: dpkg 0, apk 1, rpm 2,
# pep440 3, semver 4; selector = 2 * index); 200 rows per file.
scheme_index() {
    case $1 in
        dpkg-*) echo 0 ;; apk-*) echo 1 ;; rpm-*) echo 2 ;; pep440-*) echo 3 ;; semver-*) echo 4 ;; *) echo "" ;;
    esac
}
for tsv in "$testdata"/versions/*.tsv; do
    [ -f "$tsv" ] || continue
    i=$(scheme_index "$(basename "$tsv")")
    [ -n "$i" ] || continue
    grep -v '^#' "$tsv" | head -200 | while IFS=$'\t' read -r a b _; do
        [ -n "$a" ] || continue
        tmp=$(mktemp)
        printf '%s\n%s' "$a" "$b" >"$tmp"
        add versions $((2 * i)) "$tmp"
        rm -f "$tmp"
    done || true
done

# Layers: tarballs of the OS databases above, at the paths the analysers want.
if command -v tar >/dev/null; then
    root=$(mktemp -d)
    mkdir -p "$root/var/lib/dpkg" "$root/lib/apk/db" "$root/etc"
    f=$(find "$pkgdb" -type f -path '*dpkg/status' | head -1 || true)
    [ -n "$f" ] && cp "$f" "$root/var/lib/dpkg/status"
    f=$(find "$pkgdb" -type f -path '*apk*' -name installed | head -1 || true)
    [ -n "$f" ] && cp "$f" "$root/lib/apk/db/installed"
    f=$(find_named os-release | head -1 || true)
    [ -n "$f" ] && cp "$f" "$root/etc/os-release"
    tar -C "$root" -cf "$root.tar" .
    add layer 1 "$root.tar"
    add layer 2 "$root.tar"
    gzip -n -c "$root.tar" >"$root.tar.gz" && add layer 0 "$root.tar.gz"
    rm -rf "$root" "$root.tar" "$root.tar.gz"
fi

for dir in "$corpus"/*/; do
    printf '%-16s %5d inputs\n' "$(basename "$dir")" "$(find "$dir" -type f | wc -l)"
done
