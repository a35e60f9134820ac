#!/usr/bin/env bash
# mkosimage.sh: build a real OS disk image for the block store's benchmarks
# and measurements: a Debian bookworm minbase tree (debootstrap) packed into
# an ext4 file system image.
#
#   bench/mkosimage.sh            # prints the image's path when done
#
# The image is cached outside git at $DSTORE_CACHE/osimage/bookworm-minbase.ext4
# (DSTORE_CACHE defaults to .cache at the repository root, which .gitignore
# covers). When the image is already there the script only prints its path,
# so it is cheap to call from make.
#
# It needs root (debootstrap and mkfs.ext4 -d keep ownership and device
# nodes) and installs debootstrap with apt-get when it is missing. The Debian
# mirror is the one this machine's apt already uses (read from
# /etc/apt/sources.list and /etc/apt/sources.list.d/); set MIRROR to use
# another. OSIMAGE_MB overrides the image size in MiB (default: 1.5 times the
# tree, rounded up to 64 MiB).
set -euo pipefail

SUITE=bookworm
VARIANT=minbase

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${DSTORE_CACHE:-$repo/.cache}
outdir=$cache/osimage
out=$outdir/$SUITE-$VARIANT.ext4

log() { echo "mkosimage: $*" >&2; }
die() { log "$*"; exit 1; }

if [[ -s $out ]]; then
	log "already built"
	echo "$out"
	exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap needs it); try: sudo $0"

# mirror prints the first Debian archive URI that apt uses for $SUITE (not the
# security archive), from one-line or deb822 sources.
mirror() {
	local f
	shopt -s nullglob
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		awk -v suite="$SUITE" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
				if ($(i+1) == suite) { print $i; exit }
			}' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		# deb822: blank-line separated stanzas of "Field: value" lines.
		awk -v suite="$SUITE" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no") {
					split(uris, u, " "); print u[1]; found = 1
				}
				types = uris = suites = enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); if (found) exit; next }
			{
				k = tolower($1); sub(/:$/, "", k)
				v = $0; sub(/^[^:]*:[ \t]*/, "", v)
				if (k == "types") types = v
				else if (k == "uris") uris = v
				else if (k == "suites") suites = v
				else if (k == "enabled") enabled = tolower(v)
			}
			END { if (!found) flush() }' "$f"
	done
}

if [[ -z ${MIRROR:-} ]]; then
	MIRROR=$(mirror | head -n1)
	[[ -n $MIRROR ]] || die "no apt source for $SUITE in /etc/apt; set MIRROR"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
	log "installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
command -v mkfs.ext4 >/dev/null 2>&1 || die "mkfs.ext4 not found (apt-get install e2fsprogs)"

mkdir -p "$outdir"
work=$(mktemp -d "$outdir/build.XXXXXX")
cleanup() {
	# debootstrap may leave proc or sys mounted in the tree on failure.
	local m
	for m in proc sys dev/pts; do
		if mountpoint -q "$work/root/$m" 2>/dev/null; then
			umount -l "$work/root/$m" || true
		fi
	done
	rm -rf "$work"
}
trap cleanup EXIT

log "debootstrap --variant=$VARIANT $SUITE from $MIRROR"
if ! debootstrap --variant="$VARIANT" "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
	tail -n 30 "$work/debootstrap.log" >&2
	die "debootstrap failed"
fi
# Downloaded .debs are not part of an installed system.
rm -rf "$work/root/var/cache/apt/archives/"*.deb

tree=$(du -sb "$work/root" | cut -f1)
if [[ -n ${OSIMAGE_MB:-} ]]; then
	mb=$OSIMAGE_MB
else
	chunks=$(((tree * 3 / 2 + (64 << 20) - 1) / (64 << 20))) # 64 MiB each, rounded up
	mb=$((chunks * 64))
fi
log "tree is $((tree >> 20)) MiB; making a $mb MiB ext4 image"
truncate -s "${mb}M" "$work/image.ext4"
# 4 KiB file system blocks, as on a real VM disk (mke2fs would pick 1 KiB for
# a small image). A fixed UUID and hash seed make the image the same from run
# to run, up to file times.
mkfs.ext4 -q -F -b 4096 -L "$SUITE-$VARIANT" -U 6c1b5f8e-0d3a-4a57-9a3e-2f0f6d5b7c11 \
	-E hash_seed=0b5e2a7c-4d18-4e6f-8c39-7a1d2e3f4b5c -d "$work/root" "$work/image.ext4"
mv "$work/image.ext4" "$out"
log "built"
echo "$out"
