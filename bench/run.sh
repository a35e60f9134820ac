#!/usr/bin/env bash
# run.sh: dstore side by side with the systems its users would pick instead,
# in one run on this machine; writes docs/BENCHMARKS.md and its charts.
#
#   bench/run.sh            # or: make bench
#   QUICK=1 bench/run.sh    # short runs and small sizes, under 3 minutes
#
# Sections (each case RUNS times, 3 by default, 1 with QUICK=1; the report
# takes medians):
#   nfs         dstore serve vs NFS-Ganesha 4.3 (bench/ganesha.conf) through
#               `dstore bench nfs`
#   durability  4 KiB FILE_SYNC writes at 1, 16 and 64 outstanding (both
#               servers) vs fio --fdatasync=1 on the same disk
#   snapshot    blockstore Freeze and Clone vs qemu-img create -b
#               (bench/snapclone)
#   ingest      20 copies of an OS image, 5% of each copy's 4 KiB blocks
#               rewritten: dstore over NFS vs restic and borg (bench/ingest)
#   kernel      dstore serve vs Ganesha vs knfsd (the kernel's own server)
#               through the real Linux NFS client, in one ../shared/uml-nfs
#               guest with its own ext4 disk (bench/guest.sh): dd 512 MiB
#               conv=fsync, dd read after drop_caches, fio 4 KiB randwrite and
#               randread at iodepth 16 with --direct=1 (10 s each)
#   ox          object exchange against one versitygw (S3, posix backend) on
#               loopback (bench/ox): export of a snapshot of the OS image,
#               full and after 1% of its 4 KiB blocks changed, vs `restic
#               backup` to a repository in another bucket; time to the first
#               64 KiB read of an S3 clone (import into a fresh datastore)
#               and to reading all of it, vs `restic restore`
# QUICK=1 runs every case once (RUNS=1: a smoke test; the kernel section made
# three runs too long for 3 minutes), 1 s per NFS case, 128 MiB files,
# snapshots at 64 and 256 MiB, 2 copies to ingest, in the guest 32 MiB
# dd and 2 s of fio, and the first 32 MiB of the OS image for ox. DUR, SIZE,
# RUNS, SNAPSIZES, COPIES, INGEST_RUNS, KERNEL_SIZE (MiB), KERNEL_DUR (s),
# KERNEL_RUNS, KERNEL_SERVERS ("dstore ganesha knfsd"), KERNEL_PROFILE (s of
# CPU profile of dstore in the guest per case, 0 = none; default 20, quick 0)
# and OX_SIZE (a prefix
# of the image, e.g. 64M; 0: all of it) override. SECTIONS="nfs durability"
# picks some. Raw results land in bench/out/<time>/results.jsonl
# (gitignored); DOCS=0 leaves docs/ alone.
#
# Needs root (unshare, Ganesha), nfs-ganesha + nfs-ganesha-vfs, rpcbind,
# fio, qemu-utils, restic, borgbackup (the script names what is missing),
# the OS image from bench/mkosimage.sh for the ingest and ox sections,
# versitygw for the ox section (built into .cache/bin by `make versitygw`,
# which this script runs when it is missing; DSTORE_VERSITYGW names
# another), and for the kernel section user-mode-linux and
# ../shared/uml-nfs; knfsd's daemons come from Debian's nfs-kernel-server,
# fetched once with `apt-get download` and unpacked (dpkg -x) into
# .cache/knfsd, never installed on this machine (the section goes without
# knfsd when that fails). Beyond those fetches it uses no network: dstore,
# Ganesha, rpcbind and versitygw run in private network, mount and PID
# namespaces whose only interface is loopback, as does the guest (which has
# a loopback of its own and nothing else), and every process it starts ends
# with it (a trap, and the PID namespace as a backstop).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${QUICK:-}
[[ $QUICK == 0 ]] && QUICK=
if [[ -n $QUICK ]]; then RUNS=${RUNS:-1}; else RUNS=${RUNS:-3}; fi
SECTIONS=${SECTIONS:-nfs durability snapshot ingest kernel ox}
UMLNFS=${UMLNFS:-$repo/../shared/uml-nfs}
KNFSD_DIR=$repo/.cache/knfsd # nfs-kernel-server, unpacked
KERNEL_SERVERS=${KERNEL_SERVERS:-dstore ganesha knfsd}
export KERNEL_SERVERS
VERSITYGW=${DSTORE_VERSITYGW:-$repo/.cache/bin/versitygw}
DOCS=${DOCS:-1}

log() { echo "bench: $(date +%T) $*" >&2; }
die() { log "$*"; exit 1; }

if [[ -z ${DSTORE_BENCH_INNER:-} ]]; then
	[[ $(id -u) == 0 ]] || die "must run as root (private namespaces, Ganesha); try: sudo $0"
	missing=()
	for t in unshare ip rpcbind ganesha.nfsd fio qemu-img restic borg go; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	[[ -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so || -n $(find /usr/lib -name libfsalvfs.so 2>/dev/null | head -1) ]] || missing+=(nfs-ganesha-vfs)
	if [[ " $SECTIONS " == *" kernel "* ]]; then
		[[ -x $UMLNFS/run ]] || die "the kernel section needs ../shared/uml-nfs (looked in $UMLNFS; set UMLNFS)"
		for t in linux.uml insmod mkfs.ext4; do
			command -v "$t" >/dev/null 2>&1 || missing+=("$t (user-mode-linux kmod e2fsprogs)")
		done
	fi
	if [[ " $SECTIONS " == *" ox "* && ! -x $VERSITYGW ]]; then
		# Built once, here, where the network (the Go module proxy) is still there.
		if [[ -z ${DSTORE_VERSITYGW:-} ]]; then
			log "building versitygw into .cache/bin (make versitygw)"
			make -C "$repo" versitygw >&2 || true
		fi
		[[ -x $VERSITYGW ]] || missing+=("versitygw at $VERSITYGW (make versitygw)")
	fi
	if ((${#missing[@]})); then
		die "missing: ${missing[*]} (apt-get install -y nfs-ganesha nfs-ganesha-vfs rpcbind fio qemu-utils restic borgbackup)"
	fi
	# knfsd for the kernel section: nfs-kernel-server's rpc.nfsd, rpc.mountd
	# and exportfs, unpacked once (here, where the network is still there).
	if [[ " $SECTIONS " == *" kernel "* && " $KERNEL_SERVERS " == *" knfsd "* &&
		! -x $KNFSD_DIR/usr/sbin/rpc.nfsd ]]; then
		log "fetching nfs-kernel-server into $KNFSD_DIR (unpacked, not installed)"
		dl=$(mktemp -d)
		if (cd "$dl" && { apt-get download -q nfs-kernel-server || { apt-get update -qq && apt-get download -q nfs-kernel-server; }; }) >&2 2>&1 &&
			rm -rf "$KNFSD_DIR" && mkdir -p "$KNFSD_DIR" && dpkg -x "$dl"/nfs-kernel-server_*.deb "$KNFSD_DIR" &&
			dpkg-deb -f "$dl"/nfs-kernel-server_*.deb Version >"$KNFSD_DIR/VERSION"; then
			log "knfsd: nfs-kernel-server $(cat "$KNFSD_DIR/VERSION")"
		else
			log "knfsd: could not fetch nfs-kernel-server; the kernel section goes without knfsd"
			rm -rf "$KNFSD_DIR"
		fi
		rm -rf "$dl"
	fi
	stamp=$(date +%Y%m%d-%H%M%S)
	out=$repo/bench/out/$stamp
	mkdir -p "$out/bin"
	log "building into $out/bin"
	version=${BENCH_VERSION:-$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)}
	(cd "$repo" && go build -ldflags "-X main.version=$version" -o "$out/bin/dstore" ./cmd/dstore &&
		go build -o "$out/bin/snapclone" ./bench/snapclone &&
		go build -o "$out/bin/ingest" ./bench/ingest &&
		go build -o "$out/bin/ox" ./bench/ox &&
		go build -o "$out/bin/report" ./bench/report)
	export DSTORE_BENCH_INNER=1 BENCH_OUT=$out BENCH_VERSION=$version
	# --kill-child: when this script's shell goes, so does the namespace's
	# init, and the kernel kills everything left in it.
	unshare --net --mount --pid --fork --kill-child --mount-proc --propagation private "$0" "$@"
	log "results in $out/results.jsonl"
	if [[ $DOCS == 1 ]]; then
		"$out/bin/report" -in "$out/results.jsonl" -machine "$out/machine.json" \
			-md "$repo/docs/BENCHMARKS.md" -svg "$repo/docs/benchmarks"
		log "wrote docs/BENCHMARKS.md and docs/benchmarks/*.svg"
	fi
	exit 0
fi

# ---- inside the namespaces ----
out=$BENCH_OUT
bin=$out/bin
results=$out/results.jsonl
: >"$results"
work=$repo/.cache/bench # on the same disk as the repository, outside git
rm -rf "$work"
mkdir -p "$work"

ip link set lo up
ip addr add 127.0.0.2/8 dev lo # Ganesha's getaddrinfo wants an address besides 127.0.0.1
mount -t tmpfs tmpfs /run      # rpcbind's socket and lock, private to this run

if [[ -n $QUICK ]]; then
	DUR=${DUR:-1s} SIZE=${SIZE:-128M} SNAPSIZES=${SNAPSIZES:-64M,256M}
	COPIES=${COPIES:-2} INGEST_RUNS=${INGEST_RUNS:-1} OX_SIZE=${OX_SIZE:-32M}
	KERNEL_SIZE=${KERNEL_SIZE:-32} KERNEL_DUR=${KERNEL_DUR:-2} KERNEL_RUNS=${KERNEL_RUNS:-$RUNS}
	KERNEL_PROFILE=${KERNEL_PROFILE:-0}
else
	DUR=${DUR:-10s} SIZE=${SIZE:-1G} SNAPSIZES=${SNAPSIZES:-64M,1G,8G}
	COPIES=${COPIES:-20} INGEST_RUNS=${INGEST_RUNS:-$RUNS} OX_SIZE=${OX_SIZE:-0}
	KERNEL_SIZE=${KERNEL_SIZE:-512} KERNEL_DUR=${KERNEL_DUR:-10} KERNEL_RUNS=${KERNEL_RUNS:-$RUNS}
	KERNEL_PROFILE=${KERNEL_PROFILE:-20}
fi
KERNEL_SIZE=${KERNEL_SIZE%M} KERNEL_DUR=${KERNEL_DUR%s} KERNEL_PROFILE=${KERNEL_PROFILE%s}
if [[ " $KERNEL_SERVERS " == *" knfsd "* && ! -x $KNFSD_DIR/usr/sbin/rpc.nfsd ]]; then
	KERNEL_SERVERS=$(for s in $KERNEL_SERVERS; do [[ $s == knfsd ]] || echo "$s"; done | xargs)
fi

pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# stop PID: ends one process this script started, and forgets it.
stop() {
	local p q keep=()
	p=$1
	kill -TERM "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	for q in "${pids[@]}"; do [[ $q == "$p" ]] || keep+=("$q"); done
	pids=("${keep[@]}")
}

wait_port() { # PORT
	local i
	for i in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on port $1"
}

# record SECTION SERVER CASE RUN JSON: one line of results.jsonl.
record() {
	printf '{"section":"%s","server":"%s","case":"%s","run":%d,"result":%s}\n' \
		"$1" "$2" "$3" "$4" "$(tr -d '\n' <<<"$5")" >>"$results"
}

# The machine, for the report.
disk_of() { # DIR: the device name and model under it
	local src dev model rot
	src=$(findmnt -no SOURCE -T "$1" 2>/dev/null || echo unknown)
	dev=$(basename "$src")
	dev=$(lsblk -no PKNAME "$src" 2>/dev/null | head -1 || true)
	[[ -n $dev ]] || dev=$(basename "$src")
	model=$(cat "/sys/block/$dev/device/model" 2>/dev/null | xargs || true)
	rot=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo "?")
	fs=$(findmnt -no FSTYPE -T "$1" 2>/dev/null || echo "?")
	echo "$src ($fs; ${model:-no model}; $([[ $rot == 0 ]] && echo "non-rotational" || echo "rotational=$rot"))"
}
cat >"$out/machine.json" <<EOF
{"cpu":"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)","cores":$(nproc),
 "memory_kib":$(awk '/MemTotal/{print $2}' /proc/meminfo),"kernel":"$(uname -sr)",
 "disk":"$(disk_of "$work")","version":"$BENCH_VERSION","date":"$(date -u +%Y-%m-%dT%H:%MZ)",
 "quick":$([[ -n $QUICK ]] && echo true || echo false),"runs":$RUNS,"duration":"$DUR","size":"$SIZE",
 "ganesha":"$(dpkg-query -W -f '${Version}' nfs-ganesha 2>/dev/null || echo '?')",
 "fio":"$(fio --version)","restic":"$(restic version | awk '{print $2}')",
 "borg":"$(borg --version | awk '{print $2}')","qemu_img":"$(qemu-img --version | head -1 | awk '{print $3}')",
 "uml":"$(dpkg-query -W -f '${Version}' user-mode-linux 2>/dev/null || true)",
 "versitygw":"$(if [[ " $SECTIONS " == *" ox "* ]]; then if [[ -n ${DSTORE_VERSITYGW:-} ]]; then echo "$DSTORE_VERSITYGW"; else sed -n 's/^VERSITYGW_VERSION ?= //p' "$repo/Makefile"; fi; fi)",
 "knfsd":"$(if [[ " $SECTIONS " == *" kernel "* && " $KERNEL_SERVERS " == *" knfsd "* ]]; then cat "$KNFSD_DIR/VERSION"; fi)"}
EOF

DS_PORT=2049 G_PORT=20492 G_MNT=20493
start_servers() {
	log "starting rpcbind, Ganesha and dstore serve (loopback only)"
	rpcbind -w -f &
	pids+=($!)
	mkdir -p "$work/ganesha-export" "$work/ganesha-state" "$work/dstore-data"
	sed -e "s|@EXPORT_DIR@|$work/ganesha-export|" -e "s|@NFS_PORT@|$G_PORT|" \
		-e "s|@MNT_PORT@|$G_MNT|" -e "s|@STATE_DIR@|$work/ganesha-state|" \
		"$repo/bench/ganesha.conf" >"$work/ganesha.conf"
	sleep 0.3 # rpcbind's socket
	ganesha.nfsd -F -f "$work/ganesha.conf" -L "$out/ganesha.log" -p "$work/ganesha.pid" -N NIV_EVENT &
	pids+=($!)
	"$bin/dstore" serve --data "$work/dstore-data" --nfs "127.0.0.1:$DS_PORT" >"$out/dstore.log" 2>&1 &
	pids+=($!)
	wait_port $DS_PORT
	wait_port $G_PORT
}

# nfsbench SERVER ARGS...: dstore bench nfs against one server.
nfsbench() {
	local server=$1
	shift
	case $server in
	dstore) "$bin/dstore" bench nfs --server "127.0.0.1:$DS_PORT" --export / --json "$@" ;;
	ganesha) "$bin/dstore" bench nfs --server "127.0.0.1:$G_PORT" --mount-port $G_MNT --export "$work/ganesha-export" --json "$@" ;;
	esac
}

section_nfs() {
	# case name, then the flags (the read and random cases share a kept,
	# filled file per server: filled once, reused by later runs).
	local cases=(
		"seqwrite-1M-qd16|--workload seqwrite --bs 1M --qd 16 --conns 1"
		"seqread-1M-qd16|--workload seqread --bs 1M --qd 16 --conns 1 --file data --keep"
		"randread-4K-qd16|--workload randread --bs 4K --qd 16 --conns 1 --file data --keep"
		"randread-4K-qd64x4|--workload randread --bs 4K --qd 16 --conns 4 --file data --keep"
		"randwrite-4K-qd16|--workload randwrite --bs 4K --qd 16 --conns 1 --file data --keep"
		"randwrite-4K-qd64x4|--workload randwrite --bs 4K --qd 16 --conns 4 --file data --keep"
		"metadata-4K-qd16|--workload metadata --bs 4K --qd 16 --conns 1"
	)
	local c name flags run server res
	for c in "${cases[@]}"; do
		name=${c%%|*} flags=${c#*|}
		for run in $(seq "$RUNS"); do
			# Alternate which server goes first, so neither always
			# meets the other's leftovers (caches, destaging).
			for server in $( ((run % 2)) && echo dstore ganesha || echo ganesha dstore); do
				log "nfs $name $server run $run"
				# shellcheck disable=SC2086
				res=$(nfsbench $server $flags --size "$SIZE" --duration "$DUR") || die "dstore bench nfs $name against $server failed"
				record nfs "$server" "$name" "$run" "$res"
			done
		done
	done
}

section_durability() {
	local qd run server res
	mkdir -p "$work/fio"
	for qd in 1 16 64; do
		for run in $(seq "$RUNS"); do
			for server in dstore ganesha; do
				log "durability filesync qd$qd $server run $run"
				res=$(nfsbench $server --workload randwrite --bs 4K --qd $qd --conns 1 --stable filesync \
					--file data --keep --size "$SIZE" --duration "$DUR") || die "durability qd$qd against $server failed"
				record durability "$server" "qd$qd" "$run" "$res"
			done
			log "durability fio --fdatasync=1 numjobs=$qd run $run"
			res=$(fio --name=durability --filename="$work/fio/file" --size="$SIZE" --rw=randwrite --bs=4k \
				--ioengine=psync --fdatasync=1 --numjobs=$qd --group_reporting --time_based \
				--runtime="$DUR" --output-format=json 2>/dev/null) || die "fio failed"
			record durability fio "qd$qd" "$run" "$res"
		done
	done
}

section_snapshot() {
	log "snapshot: blockstore Freeze/Clone vs qemu-img create -b at $SNAPSIZES"
	"$bin/snapclone" -dir "$work/snap" -sizes "$SNAPSIZES" -runs "$RUNS" >>"$results" ||
		die "snapclone failed"
	rm -rf "$work/snap"
}

section_ingest() {
	local img
	img=${OSIMAGE:-${DSTORE_CACHE:-$repo/.cache}/osimage/bookworm-minbase.ext4}
	if [[ ! -s $img ]]; then
		log "ingest: no OS image at $img (build it with: sudo bench/mkosimage.sh); section skipped"
		return 0
	fi
	log "ingest: $COPIES copies of $(basename "$img") into dstore, restic and borg"
	"$bin/ingest" -image "$img" -copies "$COPIES" -work "$work/ingest" -runs "$INGEST_RUNS" \
		-dstore "$bin/dstore" >>"$results" || die "ingest failed"
	rm -rf "$work/ingest"
}

section_kernel() {
	local servers=$KERNEL_SERVERS size=$KERNEL_SIZE dur=$KERNEL_DUR runs=$KERNEL_RUNS n
	n=$(wc -w <<<"$servers")
	# The guest's disk holds one server's data at a time, with room for
	# what a server keeps of overwritten data until it collects it: every
	# run rewrites the dd file and fio overwrites it (dstore's background
	# GC waits while writers are busy; on a disk that was too small it ran
	# under space pressure in the middle of the writes and stalled them);
	# its memory the random data dd writes (in a tmpfs) besides the page
	# cache; its time limit only catches a hang.
	local disk=$((size * (2 * runs + 2) + 1024))M mem=$((size * 2 + 1024))M limit=$((120 + n * (60 + runs * (2 * dur + 30 + size / 4)) + 3 * (KERNEL_PROFILE + 30)))
	local kout=$out/kernel.jsonl logs=$out/kernel-logs rc=0 line re
	mkdir -p "$logs" "$work/tmp"
	# uml-nfs/run keeps the guest's disk image in /tmp/uml-nfs.*: here /tmp
	# is a directory under $work (this mount namespace's view only), so an
	# interrupted run leaves no image behind that the next run or this
	# one's end does not remove.
	mount --bind "$work/tmp" /tmp
	log "kernel: $servers through the Linux NFS client in a UML guest (dd $size MiB, fio $dur s, $runs run(s))"
	(cd "$repo" && "$UMLNFS/run" -d "$disk" -m "$mem" -t "$limit" bench/guest.sh \
		dstore="$bin/dstore" out="$kout" logs="$logs" size="$size" dur="$dur" runs="$runs" \
		servers="$servers" ganesha_conf="$repo/bench/ganesha.conf" knfsd="$KNFSD_DIR" profile="$KERNEL_PROFILE") >&2 || rc=$?
	umount /tmp
	re='^\{"server":"([a-z]+)","case":"([^"]+)","run":([0-9]+),"result":(.*)\}$'
	while IFS= read -r line; do
		[[ $line =~ $re ]] || die "kernel: a line of $kout is not a result: ${line:0:200}"
		record kernel "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}" "${BASH_REMATCH[4]}"
	done <"$kout"
	((rc == 0)) || die "kernel: the guest failed ($rc; 124: it ran past ${limit}s); logs in $logs"
}

section_ox() {
	local img port=7070 gw
	img=${OSIMAGE:-${DSTORE_CACHE:-$repo/.cache}/osimage/bookworm-minbase.ext4}
	if [[ ! -s $img ]]; then
		log "ox: no OS image at $img (build it with: sudo bench/mkosimage.sh); section skipped"
		return 0
	fi
	# Throwaway credentials of a server that lives as long as this section.
	local access=bench-ox secret=bench-ox-secret-$RANDOM$RANDOM
	mkdir -p "$work/versitygw"
	"$VERSITYGW" --access "$access" --secret "$secret" --port "127.0.0.1:$port" --quiet \
		--health /health posix "$work/versitygw" >"$out/versitygw.log" 2>&1 &
	gw=$!
	pids+=("$gw")
	wait_port $port
	log "ox: export and import of $(basename "$img") ($([[ $OX_SIZE == 0 ]] && echo "all of it" || echo "its first $OX_SIZE")) through versitygw, vs restic"
	AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret "$bin/ox" -image "$img" -size "$OX_SIZE" \
		-endpoint "http://127.0.0.1:$port" -work "$work/ox" -runs "$RUNS" >>"$results" || die "ox failed"
	stop "$gw"
	rm -rf "$work/ox" "$work/versitygw"
}

for s in $SECTIONS; do
	case $s in
	nfs | durability)
		[[ -n ${started:-} ]] || { start_servers; started=1; }
		"section_$s"
		;;
	snapshot | ingest | kernel | ox) "section_$s" ;;
	*) die "unknown section $s" ;;
	esac
done
cleanup
pids=()
rm -rf "$work"
log "done"
