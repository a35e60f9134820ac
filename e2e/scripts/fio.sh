# Scenario fio: 30 s of random 4 KiB O_DIRECT writes, 16 in flight, each
# block carrying a crc32c that fio checks as it goes (verify_backlog: a
# time-based randwrite job never reaches a separate verify phase); then a
# second job verifies the whole file from the server after a restart.
# fio must be installed on the host (the guest's / is the host's /):
# e2e_test.go installs it. Run: run -d 2G e2e/scripts/fio.sh [DSTORE]
set -e
. "$(dirname "$0")/common.sh"

command -v fio >/dev/null 2>&1 || fail "fio is not installed (apt-get install fio on the host)"
# fio leaves verify state files in its working directory: not in the work tree.
cd /run
start_server
mount_nfs /mnt
mkdir /mnt/fio

# A missing libaio in the guest falls back to psync: still O_DIRECT, one in flight.
engine=libaio
fio --name=probe --filename=/mnt/fio/probe --size=64k --rw=write --bs=4k --direct=1 \
	--ioengine=libaio --iodepth=4 --eta=never >/dev/null 2>&1 || engine=psync
rm -f /mnt/fio/probe
say "fio: randwrite bs=4k iodepth=16 direct=1 size=256M for 30s, verify=crc32c (ioengine=$engine)"
rc=0
fio --name=randwrite --directory=/mnt/fio --filename=data --size=256M \
	--rw=randwrite --bs=4k --direct=1 --ioengine=$engine --iodepth=16 \
	--time_based --runtime=30 \
	--verify=crc32c --verify_backlog=512 --verify_fatal=1 --do_verify=1 \
	--randrepeat=0 --group_reporting --eta=never --verify_state_save=0 --output=/run/fio.out 2>"$ERR" || rc=$?
sed 's/^/    /' /run/fio.out
[ $rc -eq 0 ] || fail "fio exited $rc: $(head -c 1000 "$ERR")"
grep -q "err= 0" /run/fio.out || fail "fio reports an error"
if grep -qi -e "verify: bad" -e "verify failed" /run/fio.out "$ERR"; then fail "fio: verification failed"; fi
say "ok: fio ran 30 s with no error, blocks verified as it went"

# The same job twice: once writing, once (--verify_only) reading back what
# the first wrote; randrepeat makes the offsets and the data the same.
job="--name=across --directory=/mnt/fio --filename=data2 --size=64M --rw=randwrite --bs=64k
	--direct=1 --ioengine=$engine --iodepth=8 --verify=crc32c --verify_fatal=1 --randrepeat=1 --eta=never --verify_state_save=0"
say "fio: 64 MiB of random 64 KiB writes with crc32c headers, not verified yet"
rc=0
# shellcheck disable=SC2086
fio $job --do_verify=0 --output=/run/fio2.out 2>"$ERR" || rc=$?
grep -e "write:" -e "err=" /run/fio2.out | sed 's/^/    /'
[ $rc -eq 0 ] || fail "fio (write) exited $rc: $(head -c 1000 "$ERR")"
say "restart the server, drop the client's caches, verify what was written"
stop_server
start_server
drop_caches
rc=0
# shellcheck disable=SC2086
fio $job --verify_only --output=/run/fio3.out 2>"$ERR" || rc=$?
grep -e "read:" -e "err=" /run/fio3.out | sed 's/^/    /'
[ $rc -eq 0 ] || fail "fio --verify_only after the restart exited $rc: $(head -c 1000 "$ERR") $(grep -i verify /run/fio3.out | head -n 5)"
if grep -qi -e "verify: bad" -e "verify failed" /run/fio3.out "$ERR"; then fail "fio: verification after the restart failed"; fi
say "ok: the 64 MiB verify after the restart"
check "rm the fio files" rm -r /mnt/fio
