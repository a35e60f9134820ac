# Scenario bigdir: a directory of 20,000 files created, listed from a cold
# client cache (READDIR/READDIRPLUS over many calls, resumed by cookie), half
# removed and listed again, then removed whole.
# Run by e2e_test.go: run -d 1G e2e/scripts/bigdir.sh [DSTORE]
set -e
. "$(dirname "$0")/common.sh"

N=20000
D=/mnt/big
start_server
mount_nfs /mnt
check "mkdir $D" mkdir "$D"

say "create $N files (f0 .. f$((N - 1)))"
t0=$(now)
i=0
while [ $i -lt $N ]; do
	: >"$D/f$i" || fail "create $D/f$i"
	i=$((i + 1))
done
say "created $N files in $(since "$t0")s"
check "one file with content" sh -c "echo content >$D/f4242"

# The names the listing must give, sorted as ls sorts them (C locale).
i=0
while [ $i -lt $N ]; do
	echo "f$i"
	i=$((i + 1))
done | LC_ALL=C sort >/run/want

say "list from a cold cache"
drop_caches
t0=$(now)
LC_ALL=C ls "$D" >/run/got || fail "ls $D"
say "listed in $(since "$t0")s"
eq "ls | wc -l" "$(wc -l </run/got)" $N
eq "distinct names" "$(sort -u /run/got | wc -l)" $N
cmp -s /run/want /run/got || fail "the listing is not f0..f$((N - 1)): $(diff /run/want /run/got | head -n 5)"
say "ok: the listing has exactly the names created"
eq "ls -l lines (READDIRPLUS attributes)" "$(drop_caches; ls -l "$D" | grep -c '^-rw')" $N
eq "the file with content" "$(cat "$D/f4242")" content
eq "find counts the same" "$(find "$D" -type f | wc -l)" $N

say "remove f10000..f19999 and list again"
t0=$(now)
rm "$D"/f1???? || fail "rm f1????"
say "removed 10000 files in $(since "$t0")s"
drop_caches
eq "ls | wc -l after removing half" "$(ls "$D" | wc -l)" $((N - 10000))
eq "no f1???? left" "$(ls "$D" | grep -c '^f1....$' || true)" 0

say "remove the directory"
t0=$(now)
rm -rf "$D" || fail "rm -rf $D"
say "removed in $(since "$t0")s"
expect_err "No such file or directory" "the directory after rm -rf" stat "$D"
drop_caches
eq "the export root" "$(ls -A /mnt | wc -l)" 0
