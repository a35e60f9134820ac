# Scenario ox: a VM disk to S3 and back, under the real kernel client, with
# the real S3 server (versitygw, built by make into .cache/bin).
#
# Datastore A holds a 2 GiB vDisk (ext4 with 16 files of 4 MiB and one of
# 10 MiB) on its NFS mount. A snapshot of it is exported to versitygw
# (make bench's ox section times export beside restic). Datastore B,
# fresh, with only the target and its key, imports the snapshot: the
# import returns at once, the first read of the vDisk follows within 1 s,
# and reading the 10 MiB file from the loop-mounted clone fetches at most
# 1.2x its size from S3 (remote_bytes_fetched). Then the SIGKILL cases: A's
# daemon is killed in the middle of an export and B's in the middle of the
# thickening; each restarted daemon finishes its job, and with the S3
# server stopped B's vDisks pass e2fsck and every file on them verifies.
# Prints OXFIG lines with the figures (docs/DESIGN.md 18B.11 records them).
# Run by e2e_test.go: run -d 4G e2e/scripts/ox.sh [DSTORE [SECS [VERSITYGW]]]
set -e
. "$(dirname "$0")/common.sh"

GW=${3:-$(pwd)/.cache/bin/versitygw}
[ -x "$GW" ] || fail "no versitygw at $GW (make builds it into .cache/bin)"
GW_PORT=7070
GW_LOG=/run/versitygw.log
GW_PID=
DATA_B=/run/scratch/ds2
NFS_PORT_B=2050
B_PID=
IMG=/mnt/vdisk.img
VD=/run/vd
KEY=/run/ox.key
ENDPOINT=http://127.0.0.1:$GW_PORT
mkdir -p "$VD" /run/scratch/s3 /mnt2 /run/clone

a() { DSTORE_DATA=$DATA "$DSTORE" "$@"; }
b() { DSTORE_DATA=$DATA_B "$DSTORE" "$@"; }

# json_num FIELD FILE: the first numeric value of "FIELD" in a JSON file.
json_num() { sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p" "$2" | head -n 1; }
# json_str FIELD FILE
json_str() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$2" | head -n 1; }

start_gw() {
	"$GW" --access oxkey --secret oxsecret-e2e --port "127.0.0.1:$GW_PORT" --quiet \
		--health /health posix /run/scratch/s3 >>"$GW_LOG" 2>&1 &
	GW_PID=$!
	wait_port "$GW_PORT" 30 || fail "versitygw does not listen on $GW_PORT: $(tail -n 5 "$GW_LOG")"
}
stop_gw() {
	[ -n "$GW_PID" ] || return 0
	kill "$GW_PID" 2>/dev/null || true
	wait "$GW_PID" 2>/dev/null || true
	GW_PID=
}

start_b() {
	echo "--- dstore serve B (at $(now)s)" >>/run/dstore-b.log
	"$DSTORE" serve --data "$DATA_B" --nfs "127.0.0.1:$NFS_PORT_B" >>/run/dstore-b.log 2>&1 &
	B_PID=$!
	wait_port "$NFS_PORT_B" 60 || fail "server B does not listen: $(tail -n 5 /run/dstore-b.log)"
}
kill_b() {
	kill -KILL "$B_PID" 2>/dev/null || true
	wait "$B_PID" 2>/dev/null || true
	B_PID=
}

# The scenario's own cleanup runs first, then common.sh's.
ox_cleanup() {
	_rc=$?
	set +e
	for m in $(loop_mounts | sort -r); do umount "$m" || umount -l "$m"; done
	if grep -q " /mnt2 nfs" /proc/mounts; then timeout 60 umount /mnt2 || umount -f -l /mnt2; fi
	if [ -n "$B_PID" ]; then
		kill -TERM "$B_PID"
		wait "$B_PID" || { say "FAIL: server B exited $? after SIGTERM, want 0" >&2; [ "$_rc" -ne 0 ] || _rc=1; }
	fi
	if grep -q -e '^panic' -e 'goroutine [0-9]* \[' /run/dstore-b.log 2>/dev/null; then
		say "FAIL: server B's log has a panic" >&2
		[ "$_rc" -ne 0 ] || _rc=1
	fi
	if [ "$_rc" -ne 0 ] && [ -f /run/dstore-b.log ]; then
		say "the last 30 lines of server B's log:"
		tail -n 30 /run/dstore-b.log | cut -c1-400
	fi
	stop_gw
	(exit "$_rc")
	cleanup
}
trap ox_cleanup EXIT

# wait_job CLI KIND STATE SECS: until `jobs --json` of that datastore shows
# every job of KIND in STATE; fails after SECS seconds or on a failed job.
wait_job() {
	_cli=$1 _kind=$2 _state=$3 _secs=$4
	_t0=$(now)
	while :; do
		$_cli jobs --json >/run/jobs.json 2>"$ERR" || fail "jobs --json: $(cat "$ERR")"
		# one object per job: split on "}," so each line is one job
		tr -d '\n' </run/jobs.json | sed 's/},/}\n/g' | grep "\"kind\": *\"$_kind\"" >/run/jobs.kind || true
		if grep -q '"state": *"failed"' /run/jobs.kind; then
			fail "a $_kind job failed: $(cat /run/jobs.kind)"
		fi
		if [ -s /run/jobs.kind ] && ! grep -v -q "\"state\": *\"$_state\"" /run/jobs.kind; then
			return 0
		fi
		[ "$(since "$_t0" | cut -d. -f1)" -lt "$_secs" ] || fail "$_kind jobs not $_state after ${_secs}s: $(cat /run/jobs.kind)"
		sleep 1
	done
}

# mid_job KIND FILE: FILE (jobs --json) shows a KIND job running, part
# done: 0 < bytes_done < bytes_total.
mid_job() {
	tr -d '\n' <"$2" | sed 's/},/}\n/g' | grep "\"kind\": *\"$1\"" | grep '"state": *"running"' |
		while read -r _l; do
			_d=$(echo "$_l" | sed -n 's/.*"bytes_done": *\([0-9]*\).*/\1/p')
			_t=$(echo "$_l" | sed -n 's/.*"bytes_total": *\([0-9]*\).*/\1/p')
			if [ -n "$_d" ] && [ -n "$_t" ] && [ "$_d" -gt 0 ] && [ "$_d" -lt "$_t" ]; then
				echo "$_d of $_t"
				return 0
			fi
		done | grep -q of
}

start_server
mount_nfs /mnt
start_gw
head -c 32 /dev/urandom >"$KEY"

say "a 2 GiB vDisk on A with ext4, 16 files of 4 MiB and one of 10 MiB"
check "truncate -s 2G" truncate -s 2G "$IMG"
check "mkfs.ext4" mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
check "mount -o loop" mount -o loop "$IMG" "$VD"
mkdir "$VD/files"
i=0
while [ $i -lt 16 ]; do
	head -c $((4 << 20)) /dev/urandom >"$VD/files/f$i" || fail "writing files/f$i"
	i=$((i + 1))
done
head -c $((10 << 20)) /dev/urandom >"$VD/big.bin" || fail "writing big.bin"
BIG_SUM=$(sha256sum <"$VD/big.bin" | cut -c1-64)
(cd "$VD" && find . -type f | sort | xargs sha256sum) >/run/sums
check "umount the ext4" umount "$VD"
sync

say "snapshot, and a target on versitygw"
check "group create" a group create vms --match vdisk.img
a snapshot create vms --json >/run/snap.json 2>"$ERR" || fail "snapshot create: $(cat "$ERR")"
ID=$(json_str id /run/snap.json)
[ -n "$ID" ] || fail "snapshot create --json printed no id: $(cat /run/snap.json)"
check "target add on A" a target add s3t s3://oxe2e/ds --endpoint "$ENDPOINT" --region us-east-1 \
	--access-key oxkey --secret-key oxsecret-e2e --key-file "$KEY"
a target list --json >/run/targets.json || fail "target list"
grep -q '"s3t"' /run/targets.json || fail "target list lacks s3t: $(cat /run/targets.json)"
if grep -q oxsecret-e2e /run/targets.json "$DATA/audit.log" "$SERVER_LOG"; then
	fail "the secret key shows in target list --json, the audit log or the server log"
fi
say "ok: the secret key is in neither target list --json, the audit log nor the server log"

say "export the snapshot, timed"
t0=$(now)
a export "$ID" s3t >/run/export.out 2>&1 || fail "export: $(tail -n 5 /run/export.out)"
EXPORT_S=$(since "$t0")
a target snapshots s3t --json >/run/tsnaps.json || fail "target snapshots"
NAME=$(json_str name /run/tsnaps.json)
[ -n "$NAME" ] || fail "target snapshots --json names no snapshot: $(cat /run/tsnaps.json)"
say "ok: exported as $NAME in ${EXPORT_S}s"
echo "OXFIG export_s=$EXPORT_S image_bytes=$((2 << 30)) data_bytes=$(((16 * 4 + 10) << 20))"

say "datastore B, fresh: the same target and key, then import"
check "init B" "$DSTORE" init --data "$DATA_B"
start_b
check "target add on B" b target add s3t s3://oxe2e/ds --endpoint "$ENDPOINT" --region us-east-1 \
	--access-key oxkey --secret-key oxsecret-e2e --key-file "$KEY" --bandwidth 1
nfs_mount 127.0.0.1 "$NFS_PORT_B" "$NFS_PORT_B" / /mnt2 2>"$ERR" || fail "mount B: $(cat "$ERR")"
t0=$(now)
b import s3t "$NAME:vdisk.img" vdisk.img >/run/import.out 2>&1 || fail "import: $(cat /run/import.out)"
IMPORT_S=$(since "$t0")
t1=$(now)
dd if=/mnt2/vdisk.img of=/dev/null bs=64k count=1 iflag=direct status=none 2>"$ERR" || fail "first read: $(cat "$ERR")"
FIRST_S=$(since "$t1")
say "ok: import returned in ${IMPORT_S}s; the first 64 KiB read took ${FIRST_S}s more"
awk -v f="$FIRST_S" 'BEGIN { exit !(f <= 1.0) }' || fail "the first read took ${FIRST_S}s after import returned, want <= 1 s"

say "the 10 MiB file from the loop-mounted clone: what it fetches from S3"
b status --json >/run/st0.json || fail "status --json"
F0=$(json_num remote_bytes_fetched /run/st0.json)
[ -n "$F0" ] || fail "status --json has no remote_bytes_fetched: $(cat /run/st0.json)"
check "mount the clone read-only" mount -o loop,ro,noload /mnt2/vdisk.img /run/clone
b status --json >/run/st1.json
F1=$(json_num remote_bytes_fetched /run/st1.json)
t0=$(now)
GOT=$(sha256sum </run/clone/big.bin | cut -c1-64)
READ_S=$(since "$t0")
eq "big.bin on the clone" "$GOT" "$BIG_SUM"
b status --json >/run/st2.json
F2=$(json_num remote_bytes_fetched /run/st2.json)
META=$((F1 - F0))
FILE=$((F2 - F1))
say "fetched: $META bytes to mount the ext4 (metadata), $FILE bytes to read the 10 MiB file in ${READ_S}s"
echo "OXFIG import_s=$IMPORT_S first_read_s=$FIRST_S mount_fetch_bytes=$META file_fetch_bytes=$FILE file_bytes=$((10 << 20)) file_read_s=$READ_S"
[ "$FILE" -le $(((10 << 20) * 12 / 10)) ] || fail "reading 10 MiB fetched $FILE bytes, more than 1.2x"
check "umount the clone" umount /run/clone

say "SIGKILL of A's daemon in the middle of an export"
check "set-bandwidth on A" a target set-bandwidth s3t 20MB/s
# New data, so the export has something to send: 64 MiB of new blocks.
check "mount the vDisk on A" mount -o loop "$IMG" "$VD"
head -c $((64 << 20)) /dev/urandom >"$VD/new.bin" || fail "writing new.bin"
(cd "$VD" && find . -type f | sort | xargs sha256sum) >/run/sums2
check "umount the vDisk on A" umount "$VD"
sync
a snapshot create vms --json >/run/snap2.json 2>"$ERR" || fail "snapshot create: $(cat "$ERR")"
ID2=$(json_str id /run/snap2.json)
a export "$ID2" s3t --no-wait >/run/export2.out 2>&1 || fail "export --no-wait: $(cat /run/export2.out)"
# Kill once the export is under way (bytes_done moves at object commits).
k=0
while :; do
	a jobs --json >/run/jobs.before 2>"$ERR" || fail "jobs --json: $(cat "$ERR")"
	mid_job export /run/jobs.before && break
	k=$((k + 1))
	[ $k -lt 60 ] || fail "the export never showed part done: $(cat /run/jobs.before)"
	sleep 0.25
done
kill_server
say "ok: A killed with its export running: $(tr -d '\n ' </run/jobs.before | cut -c1-300)"
start_server
wait_job a export done 120
a target snapshots s3t --json >/run/tsnaps2.json || fail "target snapshots"
NAME2=$(tr -d '\n' </run/tsnaps2.json | sed 's/},/}\n/g' | grep -v "\"$NAME\"" | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' | head -n 1)
[ -n "$NAME2" ] || fail "the resumed export's manifest is not on the target: $(cat /run/tsnaps2.json)"
say "ok: the export resumed after the restart and committed $NAME2"

say "SIGKILL of B's daemon in the middle of the thickening"
b import s3t "$NAME2:vdisk.img" vdisk2.img >/run/import2.out 2>&1 || fail "import: $(cat /run/import2.out)"
check "set-bandwidth on B" b target set-bandwidth s3t 20MB/s
k=0
while :; do
	b jobs --json >/run/jobs.b 2>"$ERR" || fail "jobs --json: $(cat "$ERR")"
	mid_job import /run/jobs.b && break
	k=$((k + 1))
	[ $k -lt 60 ] || fail "no thickening showed part done: $(cat /run/jobs.b)"
	sleep 0.25
done
kill_b
say "ok: B killed while thickening: $(tr -d '\n ' </run/jobs.b | cut -c1-300)"
start_b
check "set-bandwidth on B" b target set-bandwidth s3t 0
wait_job b import done 180
say "ok: every thickening finished after the restart"

say "with the S3 server stopped, B's vDisks are whole: e2fsck, and every file verifies"
stop_gw
drop_caches
for v in vdisk:sums vdisk2:sums2; do
	img=/mnt2/${v%%:*}.img
	e2fsck -fn "$img" >"$ERR" 2>&1 || fail "e2fsck -fn $img: $(tail -n 5 "$ERR")"
	check "mount $img" mount -o loop,ro,noload "$img" /run/clone
	(cd /run/clone && sha256sum -c --quiet "/run/${v#*:}") >"$ERR" 2>&1 || fail "files on $img differ: $(head -n 5 "$ERR")"
	check "umount $img" umount /run/clone
	say "ok: $img passes e2fsck -fn and its $(wc -l <"/run/${v#*:}") files verify"
done
