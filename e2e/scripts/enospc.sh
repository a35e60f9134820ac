# Scenario enospc: the datastore on a small disk (the guest's scratch disk,
# run -d 600M) filled through the mount with unique data. Writes must fail
# with ENOSPC ("No space left on device", NFS3ERR_NOSPC on the wire); files
# written and fsynced before must still verify; once files are removed the
# server must give the space back, so writing works again without a restart.
# Run by e2e_test.go: run -d 600M e2e/scripts/enospc.sh [DSTORE]
set -e
. "$(dirname "$0")/common.sh"

ENOSPC="No space left on device"
MAXFILES=200 # 8 MiB each: far more than a 600 MB disk holds
start_server
mount_nfs /mnt
mkdir /mnt/keep /mnt/fill

space() {
	echo "scratch disk: $(df -k /run/scratch | awk 'NR == 2 { print $3 " KiB used, " $4 " KiB free" }');" \
		"NFS: $(df -k /mnt | awk 'NR == 2 { print $3 " KiB used, " $4 " KiB avail" }');" \
		"data dir (KiB): $(cd /run/scratch/ds 2>/dev/null && du -sk -- * | tr '\t\n' '= ');" \
		"NVLOG files: $(ls /run/scratch/ds/nvlog 2>/dev/null | tr '\n' ' ')"
}
say "$(space)"

say "write 4 files of 4 MiB, fsynced, to keep"
: >/run/keep.sums
for k in 1 2 3 4; do
	dd if=/dev/urandom of=/run/cur bs=1M count=4 status=none
	dd if=/run/cur of=/mnt/keep/k$k bs=1M conv=fsync status=none 2>"$ERR" || fail "writing keep/k$k: $(cat "$ERR")"
	s=$(sha256sum </run/cur)
	echo "${s%% *}  k$k" >>/run/keep.sums
done

say "fill the disk with files of 8 MiB of unique data (dd conv=fsync) until a write fails"
i=0
while [ $i -lt $MAXFILES ]; do
	if ! dd if=/dev/urandom of=/mnt/fill/f$i bs=1M count=8 conv=fsync status=none 2>"$ERR"; then
		break
	fi
	i=$((i + 1))
done
[ $i -lt $MAXFILES ] || fail "wrote $MAXFILES files of 8 MiB on a 300 MB disk and no write failed"
[ $i -ge 4 ] || fail "ENOSPC after only $i files of 8 MiB: the disk is too small for this test"
grep -q "$ENOSPC" "$ERR" || fail "writing fill/f$i failed, but not with ENOSPC: $(cat "$ERR")"
say "ok: dd of fill/f$i failed with ENOSPC after $i files ($((i * 8)) MiB): $(head -n 1 "$ERR")"
say "$(space)"
sleep 3
# The NVLOG keeps up to two spare segments of 64 MiB and deletes the rest
# as destage retires them: space the server gave back after the first
# ENOSPC, so what is left may be up to a segment more than statfs showed.
say "fill what is left with files of 1 MiB until a write fails"
s=0
while [ $s -lt 160 ]; do
	if ! dd if=/dev/urandom of=/mnt/fill/s$s bs=1M count=1 conv=fsync status=none 2>"$ERR"; then
		break
	fi
	s=$((s + 1))
done
[ $s -lt 160 ] || fail "after the first ENOSPC, 160 MiB more still fitted: $(space)"
grep -q "$ENOSPC" "$ERR" || fail "writing fill/s$s failed, but not with ENOSPC: $(cat "$ERR")"
say "ok: dd of fill/s$s failed with ENOSPC after $s more files of 1 MiB"
say "$(space)"
# The server keeps ReserveBytes back, and data sitting in the NVLOG (its
# segments are preallocated) may not show in statfs yet, nor a retired
# segment deleted: a few more writes can still fit, at most a segment's
# worth. What must hold: the disk stays full within a few tries, and a write
# that was accepted reads back intact.
say "the disk stays full: another write of 8 MiB fails within 10 tries, 2 s apart"
a=0
full=
while [ $a -lt 10 ]; do
	sleep 2
	dd if=/dev/urandom of=/run/cur bs=1M count=8 status=none
	if dd if=/run/cur of=/mnt/fill/again$a bs=1M conv=fsync status=none 2>"$ERR"; then
		drop_caches
		cmp -s /run/cur /mnt/fill/again$a || fail "an 8 MiB write at full disk was accepted but reads back different"
		say "note: 8 MiB more fitted at full disk ($(space)); it reads back intact"
	else
		grep -q "$ENOSPC" "$ERR" || fail "writing fill/again$a failed, but not with ENOSPC: $(cat "$ERR")"
		full=1
		break
	fi
	a=$((a + 1))
done
[ -n "$full" ] || fail "10 more writes of 8 MiB at full disk all succeeded: $(space)"
say "ok: fill/again$a failed with ENOSPC: $(head -n 1 "$ERR")"

say "what was written and fsynced before still verifies"
drop_caches
(cd /mnt/keep && sha256sum -c --quiet /run/keep.sums) 2>"$ERR" >"$ERR.out" ||
	fail "the keep files differ at full disk: $(cat "$ERR.out" "$ERR" | head -n 5)"
say "ok: the 4 keep files verify"
eq "the first fill file's size" "$(stat -c %s /mnt/fill/f0)" $((8 << 20))

say "remove the fill files; writing must work again without a restart"
check "rm -rf /mnt/fill" rm -rf /mnt/fill
check "mkdir /mnt/after" mkdir /mnt/after
t0=$(now)
ok=
k=0
while [ $k -lt 15 ]; do
	dd if=/dev/urandom of=/run/cur bs=1M count=8 status=none
	if dd if=/run/cur of=/mnt/after/a bs=1M conv=fsync status=none 2>"$ERR"; then
		ok=1
		break
	fi
	grep -q "$ENOSPC" "$ERR" || fail "writing after the removal failed, not with ENOSPC: $(cat "$ERR")"
	rm -f /mnt/after/a
	sleep 2
	k=$((k + 1))
done
say "$(space)"
[ -n "$ok" ] || fail "writes still fail with ENOSPC $(since "$t0")s after removing $((i * 8)) MiB of files: the server did not give the space back"
say "ok: an 8 MiB write works again $(since "$t0")s after the removal"
s=$(sha256sum </run/cur)
drop_caches
eq "the new file reads back" "$(sha256sum </mnt/after/a | cut -c1-64)" "${s%% *}"

say "write as much again as was filled before: the space is really back"
j=0
while [ $j -lt $((i - 2)) ]; do
	dd if=/dev/urandom of=/mnt/after/b$j bs=1M count=8 conv=fsync status=none 2>"$ERR" ||
		fail "writing after/b$j ($((j * 8)) MiB of the $((i * 8)) MiB written before the disk was full): $(cat "$ERR"); $(space)"
	j=$((j + 1))
done
say "ok: $((j * 8)) MiB written again"
(cd /mnt/keep && sha256sum -c --quiet /run/keep.sums) || fail "the keep files differ at the end"
say "ok: the keep files still verify"
