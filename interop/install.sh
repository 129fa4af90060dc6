#!/usr/bin/env bash
# Install the real libp2p interop peers, pinned, from PyPI / npm only:
#   go  p2pd (go-libp2p-daemon) out of the hivemind==1.1.12 wheel -> interop/.peers/go/p2pd
#   js  js-libp2p 3.x + Node 22 + @chainsafe/libp2p-quic from interop/js/package-lock.json -> interop/js/node_modules
#   py  py-libp2p 0.8.1 in its own virtualenv                       -> interop/.peers/py-venv
# Idempotent: stamp files make a second run a no-op. Usage: interop/install.sh [go] [js] [py]
# Env: PYTHON (interpreter for the py venv, default python3), NPM (default npm), FORCE=1 to reinstall.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PEERS="$HERE/.peers"
PYTHON="${PYTHON:-python3}"
NPM="${NPM:-npm}"
FORCE="${FORCE:-0}"

HIVEMIND_VERSION="1.1.12"
HIVEMIND_WHEEL="hivemind-${HIVEMIND_VERSION}-py3-none-manylinux2014_x86_64.whl"
P2PD_SHA256="42f8f48e62583b97cdba3c31439c08029fb2b9fc506b5bdd82c46b7cc1d279d8"
LIBP2P_PY_VERSION="0.8.1"
NODE_MAJOR="22"
JS_QUIC_VERSION="2.1.1"  # @chainsafe/libp2p-quic; must match interop/js/package.json

CLEANUP=()
cleanup() { for d in "${CLEANUP[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

say() { printf '[interop/install] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }
stamp_ok() { [[ "$FORCE" != 1 && -f "$1" && "$(cat "$1")" == "$2" ]]; }

# pip for downloading the wheel: the repo venv if present, else the chosen interpreter.
pip_cmd() {
    if [[ -x "$REPO/.venv/bin/python" ]]; then echo "$REPO/.venv/bin/python -m pip"; else echo "$PYTHON -m pip"; fi
}

install_go() {
    local dest="$PEERS/go" stamp="$PEERS/go/.stamp"
    local want="hivemind==$HIVEMIND_VERSION p2pd=$P2PD_SHA256"
    if stamp_ok "$stamp" "$want" && [[ -x "$dest/p2pd" ]]; then
        say "go: p2pd already installed ($dest/p2pd)"
        return
    fi
    [[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] || die "go: the hivemind wheel ships p2pd for linux x86_64 only"
    mkdir -p "$dest"
    local tmp
    tmp="$(mktemp -d)"
    CLEANUP+=("$tmp")
    say "go: downloading hivemind==$HIVEMIND_VERSION wheel (for its p2pd binary only)"
    $(pip_cmd) download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
        --python-version 3.11 -d "$tmp" "hivemind==$HIVEMIND_VERSION" || die "go: pip download failed"
    [[ -f "$tmp/$HIVEMIND_WHEEL" ]] || die "go: expected $HIVEMIND_WHEEL, got: $(ls "$tmp")"
    say "go: extracting hivemind/hivemind_cli/p2pd"
    "$(command -v python3 || echo "$PYTHON")" - "$tmp/$HIVEMIND_WHEEL" "$tmp/p2pd" <<'PY' || die "go: extraction failed"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("hivemind/hivemind_cli/p2pd") as src, open(sys.argv[2], "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
PY
    local got
    got="$(sha256 "$tmp/p2pd")"
    [[ "$got" == "$P2PD_SHA256" ]] || die "go: p2pd sha256 is $got, expected $P2PD_SHA256"
    chmod +x "$tmp/p2pd"
    mv "$tmp/p2pd" "$dest/p2pd"
    echo "$want" > "$stamp"
    say "go: installed $dest/p2pd"
}

install_js() {
    local dir="$HERE/js" stamp="$HERE/js/node_modules/.mycel-stamp"
    [[ -f "$dir/package-lock.json" ]] || die "js: $dir/package-lock.json is missing"
    local want
    want="lock=$(sha256 "$dir/package-lock.json")"
    if stamp_ok "$stamp" "$want" && [[ -x "$dir/node_modules/node/bin/node" ]]; then
        say "js: node_modules up to date ($dir/node_modules)"
        return
    fi
    command -v "$NPM" >/dev/null || die "js: npm not found (install nodejs + npm from Debian, any version with npm >= 7)"
    say "js: npm ci in $dir (js-libp2p 3.x and node@$NODE_MAJOR from the registry)"
    (cd "$dir" && "$NPM" ci --no-audit --no-fund --loglevel=error) || die "js: npm ci failed"
    local node="$dir/node_modules/node/bin/node" version
    [[ -x "$node" ]] || die "js: $node missing (did npm skip the node package's install script?)"
    version="$("$node" --version)" || die "js: $node does not run"
    [[ "$version" == v$NODE_MAJOR.* ]] || die "js: $node is $version, expected v$NODE_MAJOR.x"
    # QUIC is a napi-rs binary per platform; the lock lists the other platforms' binaries as optional
    # entries without a tarball (see js/complete-lock.mjs), so npm skips them. Check what we got: the
    # pinned version, and a native binding that loads here (the mirror has linux-x64-gnu only).
    (cd "$dir" && "$node" --input-type=module -e "
        import { readFileSync } from 'node:fs'
        const { version } = JSON.parse(readFileSync('node_modules/@chainsafe/libp2p-quic/package.json', 'utf8'))
        if (version !== '$JS_QUIC_VERSION') throw new Error('@chainsafe/libp2p-quic is ' + version + ', expected $JS_QUIC_VERSION')
        const napi = await import('./node_modules/@chainsafe/libp2p-quic/dist/src/napi.js')
        if (typeof napi.QuinnConfig !== 'function') throw new Error('native binding has no QuinnConfig')
        const { applied } = await import('./quic-reset.mjs')
        if (!applied) throw new Error('quic-reset.mjs no longer matches @chainsafe/libp2p-quic: re-check it')
    ") || die "js: @chainsafe/libp2p-quic@$JS_QUIC_VERSION does not load with node $version on $(uname -s)/$(uname -m) (prebuilt binaries used here: linux-x64-gnu)"
    echo "$want" > "$stamp"
    say "js: installed, node $version, @chainsafe/libp2p-quic $JS_QUIC_VERSION"
}

install_py() {
    local venv="$PEERS/py-venv" stamp="$PEERS/py-venv/.stamp" req="$HERE/py/requirements.txt"
    local want
    want="libp2p==$LIBP2P_PY_VERSION req=$(sha256 "$req")"
    if stamp_ok "$stamp" "$want" && [[ -x "$venv/bin/python" ]]; then
        say "py: py-libp2p $LIBP2P_PY_VERSION already installed ($venv)"
        return
    fi
    command -v "$PYTHON" >/dev/null || die "py: $PYTHON not found (set PYTHON=python3.11)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "py: $PYTHON is older than 3.10"
    if [[ ! -x "$venv/bin/python" ]]; then
        say "py: creating virtualenv $venv with $("$PYTHON" --version)"
        "$PYTHON" -m venv "$venv" || die "py: venv creation failed (Debian: apt-get install python3-venv)"
    fi
    say "py: pip install libp2p==$LIBP2P_PY_VERSION (pinned by $req)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "libp2p==$LIBP2P_PY_VERSION" -c "$req" || die "py: pip install failed"
    "$venv/bin/python" -c "import importlib.metadata as m, libp2p; assert m.version('libp2p') == '$LIBP2P_PY_VERSION'" \
        || die "py: libp2p $LIBP2P_PY_VERSION does not import"
    echo "$want" > "$stamp"
    say "py: installed"
}

main() {
    local targets=("$@")
    [[ ${#targets[@]} -gt 0 ]] || targets=(go js py)
    mkdir -p "$PEERS"
    for t in "${targets[@]}"; do
        case "$t" in
            go) install_go ;;
            js) install_js ;;
            py) install_py ;;
            *) die "unknown target $t (use go, js, py)" ;;
        esac
    done
    say "done: ${targets[*]}"
}

main "$@"
