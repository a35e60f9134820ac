# Scenario dd: 256 MiB of random data written with dd conv=fsync, read back
# after drop_caches (so from the server), checksums equal; then read again
# after a server restart.
# Run by e2e_test.go: run -d 2G e2e/scripts/dd.sh [DSTORE]
set -e
. "$(dirname "$0")/common.sh"

MIB=256
start_server
mount_nfs /mnt

say "make $MIB MiB of random data in the guest's memory"
dd if=/dev/urandom of=/run/src bs=1M count=$MIB status=none
want=$(sha256sum </run/src | cut -c1-64)

say "dd $MIB MiB to /mnt/big with conv=fsync"
dd if=/run/src of=/mnt/big bs=1M conv=fsync 2>"$ERR" || fail "dd to the mount: $(cat "$ERR")"
sed 's/^/    /' "$ERR"
eq "size on the mount" "$(stat -c %s /mnt/big)" $((MIB << 20))
say "blocks used: $(stat -c %b /mnt/big) of $(stat -c %B /mnt/big) bytes"

drop_caches
say "read back after drop_caches"
dd if=/mnt/big of=/dev/null bs=1M 2>"$ERR" || fail "dd from the mount: $(cat "$ERR")"
sed 's/^/    /' "$ERR"
drop_caches
eq "sha256 of the file read back" "$(sha256sum </mnt/big | cut -c1-64)" "$want"
cmp /run/src /mnt/big || fail "cmp: the file read back differs from what was written"
say "ok: cmp equal"

say "overwrite 1 MiB in the middle with conv=notrunc,fsync"
dd if=/dev/urandom of=/run/patch bs=1M count=1 status=none
dd if=/run/patch of=/run/src bs=1M seek=100 conv=notrunc status=none
dd if=/run/patch of=/mnt/big bs=1M seek=100 conv=notrunc,fsync status=none 2>"$ERR" ||
	fail "dd over the middle: $(cat "$ERR")"
want=$(sha256sum </run/src | cut -c1-64)

say "restart the server, then read again from a fresh cache"
stop_server
start_server
drop_caches
eq "size after the restart" "$(stat -c %s /mnt/big)" $((MIB << 20))
eq "sha256 after the restart" "$(sha256sum </mnt/big | cut -c1-64)" "$want"
check "rm the file" rm /mnt/big
