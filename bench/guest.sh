# guest.sh: the kernel section of bench/run.sh, inside one User-Mode Linux
# guest of ../shared/uml-nfs (started with -d, so /run/scratch is an ext4
# disk of the guest's own). For each server in turn (dstore serve, then
# NFS-Ganesha, then the kernel's own server, knfsd), with its data on
# /run/scratch: start it on the guest's loopback, mount it with the Linux
# kernel's NFSv3 client, and RUNS times measure
#   dd-write  dd of SIZE MiB of fresh random data, bs=1M conv=fsync (MB/s)
#   dd-read   the same file after drop_caches, bs=1M (MB/s)
#   fio       4 KiB randwrite, then randread, on that file: libaio,
#             iodepth 16, --direct=1, DUR seconds each (IOPS)
# then unmount, stop it and delete its data. With profile=SECS (dstore only),
# after its measured runs, three more passes, not measured, each under a CPU
# profile of the server of SECS seconds taken through its control socket
# (dstore debug pprof): dd-write (cut off when the profile ends), fio
# randwrite, fio randread, saved as LOGS/dstore-CASE.pprof for
# `go tool pprof`. Each measurement is one JSON
# line in OUT: {"server":S,"case":C,"run":N,"result":{...}} (dd: bytes,
# seconds, mb_per_s; fio: its whole --output-format=json). bench/run.sh turns
# them into results.jsonl records of section "kernel".
#
#   ../shared/uml-nfs/run -d 4G -m 2048M -t 1200 bench/guest.sh \
#       dstore=BIN out=FILE logs=DIR size=512 dur=10 runs=3 \
#       servers="dstore ganesha knfsd" ganesha_conf=bench/ganesha.conf knfsd=DIR \
#       profile=20
#
# knfsd= is a directory where Debian's nfs-kernel-server is unpacked
# (dpkg -x): its rpc.nfsd, rpc.mountd and exportfs run here against the UML
# kernel's nfsd.ko. The guest's / is the host's: everything this script
# writes outside /run (a tmpfs) and /run/scratch is OUT and the logs, and
# /var/lib/nfs gets a tmpfs of its own so that exportfs leaves the host's
# alone. Every process started here is stopped at the end (and the guest's
# power-off ends whatever is left).
# Runs under sh -e (dash).

# shellcheck disable=SC1090 # ../shared/uml-nfs/guest-lib.sh
. "$UMLNFS_LIB"

DSTORE='' OUT='' LOGS='' SIZE=512 DUR=10 RUNS=3 SERVERS="dstore ganesha knfsd" GCONF=bench/ganesha.conf KNFSD='' PROFILE=0
for a in "$@"; do
	case $a in
	dstore=*) DSTORE=${a#*=} ;;
	out=*) OUT=${a#*=} ;;
	logs=*) LOGS=${a#*=} ;;
	size=*) SIZE=${a#*=} ;;
	dur=*) DUR=${a#*=} ;;
	runs=*) RUNS=${a#*=} ;;
	servers=*) SERVERS=${a#*=} ;;
	ganesha_conf=*) GCONF=${a#*=} ;;
	knfsd=*) KNFSD=${a#*=} ;;
	profile=*) PROFILE=${a#*=} ;;
	*) echo "guest: unknown argument $a" >&2; exit 2 ;;
	esac
done
[ -x "$DSTORE" ] || { echo "guest: no dstore binary at '$DSTORE'" >&2; exit 2; }
if [ -z "$OUT" ] || [ -z "$LOGS" ]; then echo "guest: want out= and logs=" >&2; exit 2; fi
[ -d /run/scratch ] || { echo "guest: no /run/scratch: run with -d SIZE" >&2; exit 2; }

MNT=/run/mnt
SRC=/run/src.bin # the random data dd writes, in the guest's memory
DS_PORT=2049 G_PORT=20492 G_MNT=20493 K_PORT=20494 K_MNT=20495
SERVER_PID='' RPCBIND_PID='' MOUNTD_PID='' KNFSD_UP=''
: >"$OUT"

log() {
	read -r _up _ </proc/uptime
	printf 'guest [%7s] %s\n' "$_up" "$*"
}

# stop PID: SIGTERM, then SIGKILL after 20 s.
stop() {
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || return 0
	_i=0
	while kill -0 "$1" 2>/dev/null && [ $_i -lt 200 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

stop_knfsd() {
	[ -n "$KNFSD_UP" ] || return 0
	KNFSD_UP=
	"$KNFSD/usr/sbin/rpc.nfsd" 0 || true
	"$KNFSD/usr/sbin/exportfs" -ua || true
	stop "$MOUNTD_PID"
	MOUNTD_PID=
}

cleanup() {
	_rc=$?
	set +e
	cd /
	if grep -q " $MNT nfs " /proc/mounts; then
		timeout 60 umount "$MNT" || umount -f -l "$MNT"
	fi
	stop "$SERVER_PID"
	stop_knfsd
	stop "$RPCBIND_PID"
	cp /run/*.log "$LOGS"/ 2>/dev/null
	[ "$_rc" -eq 0 ] || log "FAILED ($_rc); server logs in $LOGS"
	exit "$_rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# rpcbind: Ganesha registers with it and will not start without it; knfsd's
# daemons register too. The client is told every port, so it never asks.
case " $SERVERS " in *" ganesha "* | *" knfsd "*)
	rpcbind -w -f >/run/rpcbind.log 2>&1 &
	RPCBIND_PID=$!
	wait_port 111 10
	;;
esac

# emit SERVER CASE RUN JSON: one line of OUT.
emit() {
	printf '{"server":"%s","case":"%s","run":%d,"result":%s}\n' "$1" "$2" "$3" "$4" >>"$OUT"
}

# dd_json: dd's summary line (on stdin) as {"bytes","seconds","mb_per_s"}.
dd_json() {
	awk '/ copied, / { b = $1; s = $(NF - 3) }
	END {
		if (s == "") exit 1
		printf "{\"bytes\":%d,\"seconds\":%s,\"mb_per_s\":%.3f}", b, s, (s > 0 ? b / s / 1e6 : 0)
	}'
}

# fio_run SERVER RW RUN: one fio case on the file dd wrote.
fio_run() {
	drop_caches
	# refill_buffers: fresh random data in every write, so that no server
	# can deduplicate or compress fio's one buffer written over and over.
	fio --name="$2" --filename="$MNT/bench.img" --size="${SIZE}M" --rw="$2" --bs=4k \
		--ioengine=libaio --iodepth=16 --direct=1 --refill_buffers --time_based --runtime="$DUR" \
		--output-format=json --output=/run/fio.json >/run/fio.err 2>&1 ||
		{ cat /run/fio.err >&2; return 1; }
	emit "$1" "fio-$2-4K-qd16" "$3" "$(tr -d '\n\t' </run/fio.json)"
	# fio's "iops" come in the order read, write, trim.
	log "$1 run $3: fio $2 $(grep -o '"iops" : [0-9]*' /run/fio.json | sed -n "$([ "$2" = randread ] && echo 1 || echo 2)p" | awk '{ print $3 }') IOPS"
}

# measure SERVER: the runs against the server mounted at $MNT.
measure() {
	log "$1 mounted: $(awk -v m="$MNT" '$2 == m { print $4 }' /proc/mounts)"
	for run in $(seq "$RUNS"); do
		# Fresh data each run, so that rewriting a file with what it already
		# holds is never what is measured.
		head -c "$((SIZE << 20))" /dev/urandom >"$SRC"
		drop_caches
		dd if="$SRC" of="$MNT/bench.img" bs=1M conv=fsync 2>/run/dd.err || { cat /run/dd.err >&2; return 1; }
		res=$(dd_json </run/dd.err)
		emit "$1" "dd-write-${SIZE}M" "$run" "$res"
		log "$1 run $run: dd write $res"
		drop_caches
		dd if="$MNT/bench.img" of=/dev/null bs=1M 2>/run/dd.err || { cat /run/dd.err >&2; return 1; }
		res=$(dd_json </run/dd.err)
		emit "$1" "dd-read-${SIZE}M" "$run" "$res"
		log "$1 run $run: dd read $res"
		fio_run "$1" randwrite "$run"
		fio_run "$1" randread "$run"
	done
	rm -f "$SRC"
}

# profile_dstore: the unmeasured passes under a CPU profile (profile=SECS).
profile_dstore() {
	[ "$PROFILE" -gt 0 ] || return 0
	head -c "$((SIZE << 20))" /dev/urandom >"$SRC"
	for _case in dd-write fio-randwrite fio-randread; do
		drop_caches
		"$DSTORE" debug pprof --data /run/scratch/dstore --seconds "$PROFILE" \
			--out "$LOGS/dstore-$_case.pprof" 2>>/run/pprof.err &
		_pp=$!
		sleep 1 # the profile runs before the load starts
		case $_case in
		dd-write)
			# Cut off once the profile has ended: only its part is wanted.
			# At most 8 MiB per second of profile: what a cut-off dd leaves
			# dirty is still written back when it exits.
			timeout "$((PROFILE + 2))" dd if="$SRC" of="$MNT/profile.img" bs=1M count="$((PROFILE * 8))" \
				conv=fsync 2>/dev/null || true ;;
		fio-*)
			fio --name="${_case#fio-}" --filename="$MNT/bench.img" --size="${SIZE}M" --rw="${_case#fio-}" --bs=4k \
				--ioengine=libaio --iodepth=16 --direct=1 --refill_buffers --time_based --runtime="$PROFILE" \
				--output-format=json --output=/run/fio-profile.json >/dev/null 2>&1 || true ;;
		esac
		if wait "$_pp"; then
			log "dstore: CPU profile of $_case: $LOGS/dstore-$_case.pprof"
		else
			log "dstore: no CPU profile of $_case: $(cat /run/pprof.err)"
		fi
	done
	rm -f "$SRC" "$MNT/profile.img"
}

unmount() {
	umount "$MNT" || { sleep 1; umount "$MNT"; }
}

bench_dstore() {
	mkdir -p /run/scratch/dstore
	"$DSTORE" serve --data /run/scratch/dstore --nfs "127.0.0.1:$DS_PORT" >/run/dstore.log 2>&1 &
	SERVER_PID=$!
	wait_port $DS_PORT 60
	nfs_mount 127.0.0.1 $DS_PORT $DS_PORT / "$MNT"
	measure dstore
	profile_dstore
	unmount
	stop "$SERVER_PID"
	SERVER_PID=
	rm -rf /run/scratch/dstore
}

bench_ganesha() {
	mkdir -p /run/scratch/ganesha /run/ganesha-state
	sed -e "s|@EXPORT_DIR@|/run/scratch/ganesha|" -e "s|@NFS_PORT@|$G_PORT|" \
		-e "s|@MNT_PORT@|$G_MNT|" -e "s|@STATE_DIR@|/run/ganesha-state|" "$GCONF" >/run/ganesha.conf
	ganesha.nfsd -F -f /run/ganesha.conf -L /run/ganesha.log -p /run/ganesha.pid -N NIV_EVENT &
	SERVER_PID=$!
	wait_port $G_PORT 60
	wait_port $G_MNT 10
	nfs_mount 127.0.0.1 $G_PORT $G_MNT /run/scratch/ganesha "$MNT"
	measure ganesha
	unmount
	stop "$SERVER_PID"
	SERVER_PID=
	rm -rf /run/scratch/ganesha
}

bench_knfsd() {
	_m=/usr/lib/uml/modules/$(uname -r)/kernel
	for _k in lib/oid_registry net/sunrpc/auth_gss/auth_rpcgss fs/nfsd/nfsd; do
		grep -q "^$(basename $_k) " /proc/modules || insmod "$_m/$_k.ko"
	done
	grep -q " /proc/fs/nfsd " /proc/mounts || mount -t nfsd nfsd /proc/fs/nfsd
	# exportfs and rpc.mountd keep their tables here: the guest's own.
	mount -t tmpfs tmpfs /var/lib/nfs
	mkdir -p /var/lib/nfs/v4recovery /run/scratch/knfsd
	: >/var/lib/nfs/etab
	: >/var/lib/nfs/rmtab
	KNFSD_UP=1
	"$KNFSD/usr/sbin/exportfs" -i -o rw,sync,no_root_squash,no_subtree_check,insecure 127.0.0.1:/run/scratch/knfsd
	# rpc.mountd tries IPv6 sockets too, which this kernel lacks: its
	# complaints go to its log.
	"$KNFSD/usr/sbin/rpc.mountd" -F -N 4 -p $K_MNT >/run/knfsd-mountd.log 2>&1 &
	MOUNTD_PID=$!
	"$KNFSD/usr/sbin/rpc.nfsd" -N 4 -p $K_PORT 8 >/run/knfsd-nfsd.log 2>&1
	wait_port $K_PORT 30
	wait_port $K_MNT 30
	nfs_mount 127.0.0.1 $K_PORT $K_MNT /run/scratch/knfsd "$MNT"
	measure knfsd
	unmount
	stop_knfsd
	rm -rf /run/scratch/knfsd
}

for s in $SERVERS; do
	log "$s: size ${SIZE} MiB, fio ${DUR} s, $RUNS run(s)"
	"bench_$s"
done
log "done"
