# Scenario kill: the server SIGKILLed and restarted, twice, in the middle of a
# workload on a hard mount (the default). Two writers run meanwhile: one
# writes new 1 MiB files with dd conv=fsync, one overwrites 64 KiB blocks of a
# 16 MiB "disk" in place with conv=notrunc,fsync (what a VM does), keeping a
# shadow copy in the guest's memory. The client must carry on: no EIO, no
# ESTALE, the writers exit 0 with nothing on stderr, and afterwards every
# fsynced byte verifies.
# Run by e2e_test.go: run -d 2G e2e/scripts/kill.sh [DSTORE]
set -e
. "$(dirname "$0")/common.sh"

K=/mnt/k
start_server
mount_nfs /mnt
mkdir "$K"
: >/run/files.sums
echo 0 >/run/blocks.count
rm -f /run/stop

# writer_files: new files f00000, f00001, ... of 1 MiB (every third 8 MiB),
# each written buffered (UNSTABLE writes) and fsynced once at the end
# (COMMIT), then its checksum recorded.
writer_files() {
	set -e
	i=0
	while [ ! -e /run/stop ]; do
		f=$(printf 'f%05d' $i)
		count=16
		[ $((i % 3)) -ne 2 ] || count=128
		dd if=/dev/urandom of=/run/cur bs=64k count=$count status=none
		dd if=/run/cur of="$K/$f" bs=128k conv=fsync status=none
		s=$(sha256sum </run/cur)
		echo "${s%% *}  $f" >>/run/files.sums
		i=$((i + 1))
	done
}

# writer_blocks: 64 KiB blocks of $K/disk overwritten in place, fsynced; the
# shadow copy follows once the write to the mount has returned.
writer_blocks() {
	set -e
	dd if=/dev/urandom of=/run/shadow bs=1M count=16 status=none
	dd if=/run/shadow of="$K/disk" bs=1M conv=fsync status=none
	j=0
	while [ ! -e /run/stop ]; do
		off=$(((j * 97 + 13) % 256))
		dd if=/dev/urandom of=/run/blk bs=64k count=1 status=none
		dd if=/run/blk of="$K/disk" bs=64k seek=$off conv=notrunc,fsync status=none
		dd if=/run/blk of=/run/shadow bs=64k seek=$off conv=notrunc status=none
		j=$((j + 1))
		echo $j >/run/blocks.count
	done
}

writer_files 2>/run/files.err &
WF=$!
writer_blocks 2>/run/blocks.err &
WB=$!

files() { wc -l </run/files.sums; }
blocks() { cat /run/blocks.count; }

# progress_after N M: wait until both writers went past N files and M blocks.
progress_after() {
	_k=0
	while [ "$(files)" -le "$1" ] || [ "$(blocks)" -le "$2" ]; do
		[ $_k -lt 900 ] || fail "no progress 90 s after the restart: files $(files) (was $1), blocks $(blocks) (was $2)"
		kill -0 $WF 2>/dev/null || fail "the file writer died: $(cat /run/files.err)"
		kill -0 $WB 2>/dev/null || fail "the block writer died: $(cat /run/blocks.err)"
		sleep 0.1
		_k=$((_k + 1))
	done
}

progress_after 2 2
for round in 1 2; do
	sleep 2
	n=$(files)
	m=$(blocks)
	say "round $round: kill -9 the server (files written: $n, blocks: $m)"
	kill_server
	sleep 1
	start_server
	t0=$(now)
	say "restarted; waiting for the writers to go on"
	progress_after $((n + 2)) $((m + 2))
	say "ok: the writers went on $(since "$t0")s after the restart (files: $(files), blocks: $(blocks))"
done
sleep 2
touch /run/stop
rc=0
wait $WF || rc=$?
[ $rc -eq 0 ] || fail "the file writer exited $rc: $(cat /run/files.err)"
rc=0
wait $WB || rc=$?
[ $rc -eq 0 ] || fail "the block writer exited $rc: $(cat /run/blocks.err)"
[ ! -s /run/files.err ] || fail "the file writer wrote to stderr: $(head -c 1000 /run/files.err)"
[ ! -s /run/blocks.err ] || fail "the block writer wrote to stderr: $(head -c 1000 /run/blocks.err)"
say "ok: both writers exited 0 with an empty stderr (no EIO, no ESTALE)"
dmesg | grep -e 'nfs: server' | tail -n 8 | sed 's/^/    dmesg: /'

say "verify: $(files) files and the 16 MiB disk, from the server"
drop_caches
eq "files on the mount" "$(ls "$K" | grep -c '^f')" "$(files)"
(cd "$K" && sha256sum -c --quiet /run/files.sums) 2>"$ERR" >"$ERR.out" ||
	fail "files differ: $(head -n 5 "$ERR.out") $(head -c 500 "$ERR")"
say "ok: every file verifies"
cmp "$K/disk" /run/shadow || fail "the disk differs from its shadow copy"
say "ok: the disk equals its shadow after $(blocks) in-place writes"

say "once more after a clean restart"
stop_server
start_server
drop_caches
(cd "$K" && sha256sum -c --quiet /run/files.sums) 2>"$ERR" >"$ERR.out" ||
	fail "files differ after the clean restart: $(head -n 5 "$ERR.out")"
cmp "$K/disk" /run/shadow || fail "the disk differs from its shadow after the clean restart"
say "ok: all verifies"
