#!/usr/bin/env bash
# Builds (once) the local Kubernetes control plane used by the test suite and `make cluster`:
# kube-apiserver, kube-controller-manager and kube-scheduler from Debian bookworm's `kubernetes`
# source package, plus etcd and kubectl from Debian's binary packages. Everything lands in a cache
# outside the repo, keyed by version, so later runs reuse it and start in seconds.
# Prints the binaries' directory on stdout. `build.sh --check` prints it only if the build is complete
# (exit 1 otherwise) and never builds.
set -euo pipefail

K8S_SOURCE_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
# Bumped whenever the way the binaries are built changes, so a stale cache is never reused.
BUILD_REVISION=2
CACHE_ROOT="${SPOT_REBALANCER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spot-rebalancer}"
BIN_DIR="$CACHE_ROOT/kube-$K8S_SOURCE_VERSION-r$BUILD_REVISION/bin"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)

have_all() {
  for b in "${COMPONENTS[@]}" etcd kubectl; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}
if have_all; then echo "$BIN_DIR"; exit 0; fi
# --check: only say whether the build is there (the harness uses it; it never builds on its own).
if [[ ${1:-} == --check ]]; then
  echo "build.sh: the control plane binaries are not all in $BIN_DIR; run tests/kube/build.sh" >&2
  exit 1
fi

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

log() { echo "build.sh: $*" >&2; }
mkdir -p "$BIN_DIR"
work="$CACHE_ROOT/build-$K8S_SOURCE_VERSION"
mkdir -p "$work"

need_pkgs=()
for p in golang-go dpkg-dev etcd-server rsync; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  log "installing ${need_pkgs[*]}"
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

# etcd: Debian's etcd-server ships /usr/bin/etcd.
ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$BIN_DIR/etcd"

# A private apt state whose sources are the machine's own `deb` entries turned into `deb-src`, so
# `apt-get source` works without touching the system's apt configuration.
apt_state="$work/apt"
mkdir -p "$apt_state/lists/partial" "$apt_state/cache/archives/partial"
src_list="$apt_state/sources.list"
: >"$src_list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [[ -f $f ]] || continue
  sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >>"$src_list"
done
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -f $f ]] || continue
  # deb822 stanzas: keep them, with Types: deb-src.
  awk 'BEGIN{RS="";ORS="\n\n"} /Types:[^\n]*deb([[:space:]]|$)/ {sub(/Types:[^\n]*/,"Types: deb-src"); print}' "$f" \
    >"$apt_state/$(basename "$f")"
done
APT_OPTS=(-o "Dir::Etc::SourceList=$src_list" -o "Dir::Etc::SourceParts=$apt_state"
  -o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache=$apt_state/cache" -o "Debug::NoLocking=1")

if [[ ! -x "$BIN_DIR/kubectl" ]]; then
  # kubectl matching the apiserver, from Debian's kubernetes-client, unpacked (not installed, so the
  # machine's own kubectl is left alone).
  (cd "$work" && { apt-get download -qq "kubernetes-client=$K8S_SOURCE_VERSION" >&2 ||
    { as_root apt-get update -qq >&2 && apt-get download -qq "kubernetes-client=$K8S_SOURCE_VERSION" >&2; }; })
  rm -rf "$work/client" && dpkg -x "$work"/kubernetes-client_*.deb "$work/client"
  cp "$work/client/usr/bin/kubectl" "$BIN_DIR/kubectl"
fi

src_dir=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -n1)
if [[ -z $src_dir ]]; then
  log "fetching the kubernetes $K8S_SOURCE_VERSION source package"
  apt-get "${APT_OPTS[@]}" -qq update >&2
  (cd "$work" && apt-get "${APT_OPTS[@]}" source --only-source "kubernetes=$K8S_SOURCE_VERSION" >&2)
  src_dir=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -n1)
fi
[[ -n $src_dir ]] || { log "no kubernetes source tree after apt-get source"; exit 1; }

# The vendored github.com/modern-go/reflect2 v1.0.1 crashes the apiserver when built with Go >= 1.18
# (nil dereference decoding JSON maps); v1.0.2 fixes it and is API-compatible. Debian ships its
# source as golang-github-modern-go-reflect2-dev: swap it into vendor/ and record the version.
reflect2="$src_dir/vendor/github.com/modern-go/reflect2"
if [[ ! -f "$reflect2/go_above_118.go" ]]; then
  log "updating the vendored reflect2 to 1.0.2 for Go >= 1.18"
  (cd "$work" && { apt-get download -qq golang-github-modern-go-reflect2-dev >&2 ||
    { as_root apt-get update -qq >&2 && apt-get download -qq golang-github-modern-go-reflect2-dev >&2; }; })
  rm -rf "$work/reflect2-deb" && dpkg -x "$work"/golang-github-modern-go-reflect2-dev_*.deb "$work/reflect2-deb"
  rm -rf "$reflect2" && mkdir -p "$reflect2"
  cp "$work"/reflect2-deb/usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$reflect2/"
  sed -i 's#\(github.com/modern-go/reflect2 => github.com/modern-go/reflect2\) v1.0.1#\1 v1.0.2#' \
    "$src_dir/go.mod" "$src_dir/vendor/modules.txt"
fi

missing=()
for c in "${COMPONENTS[@]}"; do [[ -x "$BIN_DIR/$c" ]] || missing+=("cmd/$c"); done
if ((${#missing[@]})); then
  log "building ${missing[*]} (about 15 minutes the first time)"
  # Kubernetes' own build (hack/lib/golang.sh) sets up its staging modules; plain `go build` cannot.
  # A half-finished earlier build leaves empty generator binaries behind; start clean (the Go build
  # cache keeps the next attempt quick).
  rm -rf "$src_dir/_output"
  (cd "$src_dir" && GOCACHE="$work/gocache" GOPATH="$work/gopath" CGO_ENABLED=0 \
    make WHAT="${missing[*]}" >&2)
  for c in "${COMPONENTS[@]}"; do
    [[ -x "$BIN_DIR/$c" ]] || cp "$src_dir/_output/bin/$c" "$BIN_DIR/$c"
  done
fi
have_all || { log "some binaries are missing in $BIN_DIR"; exit 1; }
echo "$BIN_DIR"
