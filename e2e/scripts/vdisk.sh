# Scenario vdisk: what a VM does with its disk. A 1 GiB sparse vDisk file on
# the mount, mkfs.ext4, loop-mounted, 1,000 files written, unmounted, fsck
# clean; the server stopped (SIGTERM) and restarted under the hard mount; the
# vDisk loop-mounted again, the 1,000 files verified, fsck clean again.
# Run by e2e_test.go: run -d 2G e2e/scripts/vdisk.sh [DSTORE]
set -e
. "$(dirname "$0")/common.sh"

IMG=/mnt/vdisk.img
VD=/run/vd
N=1000
start_server
mount_nfs /mnt
mkdir -p "$VD"

say "a 1 GiB sparse vDisk, mkfs.ext4"
check "truncate -s 1G $IMG" truncate -s 1G "$IMG"
eq "size" "$(stat -c %s "$IMG")" $((1 << 30))
t0=$(now)
check "mkfs.ext4 -q -F $IMG" mkfs.ext4 -q -F "$IMG"
say "mkfs took $(since "$t0")s; the vDisk uses $(du -k "$IMG" | cut -f1) KiB"
check "mount -o loop" mount -o loop "$IMG" "$VD"

say "write $N files of 40 KiB of random data, recording their checksums"
mkdir "$VD/files"
head -c $((N * 40 * 1024)) /dev/urandom >/run/blob
t0=$(now)
# split: one process writes all the files (f0000 .. f0999)
(cd "$VD/files" && split -b 40k -a 4 -d /run/blob f) || fail "writing the files"
eq "files written" "$(ls "$VD/files" | wc -l)" $N
(cd "$VD/files" && sha256sum f*) >/run/sums
say "wrote $N files in $(since "$t0")s, $(du -sk "$VD/files" | cut -f1) KiB"
check "a big file too: 32 MiB" dd if=/dev/urandom of="$VD/bigfile" bs=1M count=32 status=none
(cd "$VD" && sha256sum bigfile) >>/run/sums.big

t0=$(now)
check "umount the vDisk" umount "$VD"
say "umount (flush to NFS) took $(since "$t0")s"
t0=$(now)
check "fsck.ext4 -f -n: clean" fsck.ext4 -f -n "$IMG"
say "fsck took $(since "$t0")s; the vDisk uses $(du -k "$IMG" | cut -f1) KiB"

say "stop the server (SIGTERM) and restart it, under the hard NFS mount"
stop_server
start_server
drop_caches
t0=$(now)
eq "the vDisk through the old mount after the restart" "$(stat -c %s "$IMG")" $((1 << 30))
say "the mount answered in $(since "$t0")s"

say "loop-mount again and verify"
check "mount -o loop again" mount -o loop "$IMG" "$VD"
eq "file count" "$(ls "$VD/files" | wc -l)" $N
(cd "$VD/files" && sha256sum -c --quiet /run/sums) 2>"$ERR" || fail "checksums differ: $(head -n 5 "$ERR")"
say "ok: the $N files verify"
(cd "$VD" && sha256sum -c --quiet /run/sums.big) || fail "bigfile differs"
say "ok: bigfile verifies"
check "change a few files" sh -c "echo changed >$VD/files/f0001 && rm $VD/files/f0002 && mkdir $VD/newdir"
check "umount the vDisk" umount "$VD"
check "fsck.ext4 -f -n: clean again" fsck.ext4 -f -n "$IMG"
check "rm the vDisk" rm "$IMG"
