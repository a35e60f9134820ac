# Scenario ops: the everyday file operations through the kernel client, each
# checked, and each failure with its expected errno (matched by its strerror
# text in the tool's message). Then everything is checked again from a fresh
# client cache after a server restart, so what was seen was the server's.
# Run by e2e_test.go: run -d 1G e2e/scripts/ops.sh [DSTORE]
set -e
. "$(dirname "$0")/common.sh"

ENOENT="No such file or directory"
EEXIST="File exists"
ENOTEMPTY="Directory not empty"
EISDIR="Is a directory"
ENOTDIR="Not a directory"
ENAMETOOLONG="File name too long"
EPERM="Operation not permitted"
EACCES="Permission denied"

start_server
mount_nfs /mnt
chmod 755 /mnt
M=/mnt/ops
check "mkdir $M" mkdir "$M"
check "chmod 755 $M" chmod 755 "$M"

say "--- create, write, read"
check "create an empty file" sh -c ": >$M/f"
eq "size of the new file" "$(stat -c %s "$M/f")" 0
eq "type of the new file" "$(stat -c %F "$M/f")" "regular empty file"
eq "owner of the new file" "$(stat -c %u:%g "$M/f")" 0:0
check "write" sh -c "printf 'hello world\n' >$M/f"
eq "read back" "$(cat "$M/f")" "hello world"
check "append" sh -c "printf 'second line\n' >>$M/f"
eq "line count after append" "$(wc -l <"$M/f")" 2
check "overwrite 2 bytes in the middle" sh -c "printf XY | dd of=$M/f bs=1 seek=2 conv=notrunc status=none"
eq "after the overwrite" "$(head -n 1 "$M/f")" "heXYo world"
drop_caches
eq "read after drop_caches" "$(head -n 1 "$M/f")" "heXYo world"
expect_err "$ENOENT" "open a missing file" cat "$M/missing"
expect_err "$ENOENT" "create in a missing directory" touch "$M/missing/f"
expect_err "$ENOTDIR" "a file used as a directory" touch "$M/f/x"

say "--- rename"
check "rename f to g" mv "$M/f" "$M/g"
expect_err "$ENOENT" "the old name after rename" stat "$M/f"
eq "content under the new name" "$(head -n 1 "$M/g")" "heXYo world"
check "create h" sh -c "echo replacement >$M/h"
ino_h=$(stat -c %i "$M/h")
check "rename h over the existing g" mv -f "$M/h" "$M/g"
eq "g after rename over it" "$(cat "$M/g")" replacement
eq "g's inode is h's" "$(stat -c %i "$M/g")" "$ino_h"
expect_err "$ENOENT" "h after rename over g" stat "$M/h"
check "mkdir d1, d2/x" mkdir -p "$M/d1" "$M/d2/x"
expect_err "$ENOTEMPTY\|$EEXIST" "rename a directory over a non-empty one" mv -T "$M/d1" "$M/d2"
check "mkdir d3" mkdir "$M/d3"
check "rename a directory over an empty one" mv -T "$M/d1" "$M/d3"
expect_err "$ENOENT" "d1 after rename over d3" stat "$M/d1"
check "rename a directory into another" mv "$M/d3" "$M/d2/x/"
check "the moved directory" test -d "$M/d2/x/d3"
eq "nlink of d2/x with one subdirectory" "$(stat -c %h "$M/d2/x")" 3

say "--- link"
check "hard link l to g" ln "$M/g" "$M/l"
eq "nlink of g" "$(stat -c %h "$M/g")" 2
eq "l's inode" "$(stat -c %i "$M/l")" "$(stat -c %i "$M/g")"
check "write through the link" sh -c "echo via-link >>$M/l"
eq "read through g" "$(tail -n 1 "$M/g")" via-link
expect_err "$EEXIST" "link onto an existing name" ln "$M/g" "$M/l"
expect_err "$ENOENT" "link from a missing file" ln "$M/missing" "$M/l2"

say "--- symlink"
check "symlink s -> g" ln -s g "$M/s"
eq "readlink s" "$(readlink "$M/s")" g
eq "type of s" "$(stat -c %F "$M/s")" "symbolic link"
eq "read through s" "$(head -n 1 "$M/s")" replacement
check "dangling symlink" ln -s nowhere "$M/dangling"
expect_err "$ENOENT" "open through a dangling symlink" cat "$M/dangling"
expect_err "$EEXIST" "symlink onto an existing name" ln -s g "$M/s"
long_target=$(printf 'x%.0s' $(seq 1 1000))
check "symlink with a 1000-byte target" ln -s "$long_target" "$M/longlink"
eq "readlink of the long target" "$(readlink "$M/longlink" | wc -c)" 1001

say "--- chmod"
check "chmod 640 g" chmod 640 "$M/g"
eq "mode of g" "$(stat -c %a "$M/g")" 640
check "create p" sh -c "echo '#!/bin/sh' >$M/p"
check "chmod 4755 p (setuid)" chmod 4755 "$M/p"
eq "mode of p" "$(stat -c %a "$M/p")" 4755
check "chmod 2711 p (setgid)" chmod 2711 "$M/p"
eq "mode of p" "$(stat -c %a "$M/p")" 2711
check "mkdir sticky" mkdir "$M/sticky"
check "chmod 1777 sticky" chmod 1777 "$M/sticky"
eq "mode of sticky" "$(stat -c %a "$M/sticky")" 1777

say "--- chown"
check "chown 1234:5678 g" chown 1234:5678 "$M/g"
eq "owner of g" "$(stat -c %u:%g "$M/g")" 1234:5678
eq "owner of l (same inode)" "$(stat -c %u:%g "$M/l")" 1234:5678
check "chown -h on the symlink" chown -h 42:43 "$M/s"
eq "owner of the symlink" "$(stat -c %u:%g "$M/s")" 42:43
eq "owner of its target unchanged" "$(stat -c %u:%g "$M/g")" 1234:5678

say "--- timestamps"
check "set mtime with ns" touch -m -d '2001-02-03 04:05:06.123456789 UTC' "$M/g"
check "set atime with ns" touch -a -d '2002-03-04 05:06:07.987654321 UTC' "$M/g"
eq "mtime" "$(TZ=UTC stat -c %y "$M/g")" "2001-02-03 04:05:06.123456789 +0000"
eq "atime" "$(TZ=UTC stat -c %x "$M/g")" "2002-03-04 05:06:07.987654321 +0000"

say "--- truncate"
check "create t" sh -c "printf 'hello world' >$M/t"
check "truncate t to 5" truncate -s 5 "$M/t"
eq "t after truncate" "$(cat "$M/t")" hello
check "extend t to 1 MiB" truncate -s 1M "$M/t"
eq "size after extension" "$(stat -c %s "$M/t")" 1048576
drop_caches
eq "non-zero bytes past the old end" "$(tail -c +6 "$M/t" | tr -d '\000' | wc -c)" 0
eq "the head" "$(head -c 5 "$M/t")" hello
check "truncate t to 0" truncate -s 0 "$M/t"
eq "size after truncate to 0" "$(stat -c %s "$M/t")" 0

say "--- rm"
check "rm the link l" rm "$M/l"
eq "nlink of g after rm l" "$(stat -c %h "$M/g")" 1
expect_err "$ENOENT" "rm a missing file" rm "$M/l"
expect_err "$EISDIR" "unlink(2) a directory" unlink "$M/d2"
check "rm t" rm "$M/t"
expect_err "$ENOENT" "t after rm" stat "$M/t"

say "--- mkdir, rmdir"
check "mkdir e" mkdir "$M/e"
eq "type of e" "$(stat -c %F "$M/e")" directory
eq "nlink of e" "$(stat -c %h "$M/e")" 2
check "mkdir -p e/a/b/c" mkdir -p "$M/e/a/b/c"
check "file in e/a" sh -c "echo x >$M/e/a/file"
drop_caches
expect_err "$EEXIST" "mkdir an existing directory" mkdir "$M/e"
expect_err "$EEXIST" "mkdir over an existing file" mkdir "$M/g"
expect_err "$ENOTEMPTY" "rmdir a non-empty directory" rmdir "$M/e/a"
expect_err "$ENOTDIR" "rmdir a file" rmdir "$M/g"
expect_err "$ENOENT" "rmdir a missing directory" rmdir "$M/nodir"
expect_err "$ENOTDIR" "mkdir under a file" mkdir "$M/g/sub"
check "rmdir e/a/b/c" rmdir "$M/e/a/b/c"
check "rm e/a/file" rm "$M/e/a/file"
check "rmdir -p e/a/b" rmdir "$M/e/a/b" "$M/e/a" "$M/e"
expect_err "$ENOENT" "e after rmdir" stat "$M/e"

say "--- name lengths"
n255=$(printf 'n%.0s' $(seq 1 255))
n256=${n255}n
check "create a 255-byte name" sh -c ": >$M/$n255"
eq "listed" "$(ls "$M" | grep -c "^$n255\$")" 1
expect_err "$ENAMETOOLONG" "create a 256-byte name" touch "$M/$n256"
expect_err "$ENAMETOOLONG" "mkdir a 256-byte name" mkdir "$M/$n256"
expect_err "$ENAMETOOLONG" "rename to a 256-byte name" mv "$M/$n255" "$M/$n256"
check "rm the 255-byte name" rm "$M/$n255"

say "--- permissions (as uid 65534)"
check "mkdir rodir, mode 555" sh -c "mkdir $M/rodir && chmod 555 $M/rodir"
check "root file 644" sh -c "echo root >$M/rootfile && chmod 644 $M/rootfile"
check "root file 444 in a 777 dir" sh -c "mkdir $M/open && chmod 777 $M/open && echo ro >$M/open/ro && chmod 444 $M/open/ro"
check "root secret 600" sh -c "echo secret >$M/secret && chmod 600 $M/secret"
check "nobody's own file" sh -c "echo mine >$M/nobodys && chown 65534:65534 $M/nobodys"
drop_caches
eq "nobody reads a 644 file" "$(as_nobody cat "$M/rootfile")" root
expect_err "$EACCES" "nobody creates in a 555 directory" as_nobody touch "$M/rodir/x"
expect_err "$EACCES" "nobody mkdirs in a 555 directory" as_nobody mkdir "$M/rodir/x"
expect_err "$EACCES" "nobody writes root's 444 file" as_nobody sh -c "echo x >>$M/open/ro" # dash: "cannot create ...: Permission denied"
expect_err "$EACCES" "nobody reads root's 600 file" as_nobody cat "$M/secret"
expect_err "$EACCES" "nobody creates in root's 755 directory" as_nobody touch "$M/x"
expect_err "$EPERM" "nobody chowns its own file to root" as_nobody chown 0 "$M/nobodys"
expect_err "$EPERM" "nobody chowns root's file" as_nobody chown 65534 "$M/rootfile"
expect_err "$EPERM" "nobody chmods root's file" as_nobody chmod 666 "$M/rootfile"
check "nobody chmods its own file" as_nobody chmod 600 "$M/nobodys"
check "nobody writes its own file" as_nobody sh -c "echo more >>$M/nobodys"
check "nobody creates in a 777 directory" as_nobody sh -c "echo n >$M/open/n"
eq "owner of what nobody created" "$(stat -c %u:%g "$M/open/n")" 65534:65534
check "root file in the sticky directory" sh -c "echo r >$M/sticky/r"
expect_err "$EPERM\|$EACCES" "nobody removes root's file in a sticky directory" as_nobody rm -f "$M/sticky/r"
check "root's file in the sticky directory is still there" test -f "$M/sticky/r"

say "--- the same from a fresh client after a server restart"
cd /
check "umount" umount /mnt
stop_server
start_server
mount_nfs /mnt
eq "listing" "$(ls "$M" | tr '\n' ' ')" "d2 dangling g longlink nobodys open p rodir rootfile s secret sticky "
eq "g" "$(cat "$M/g")" "replacement
via-link"
eq "g mode, owner, nlink" "$(stat -c '%a %u:%g %h' "$M/g")" "640 1234:5678 1"
eq "g mtime" "$(TZ=UTC stat -c %y "$M/g")" "2001-02-03 04:05:06.123456789 +0000"
eq "g atime" "$(TZ=UTC stat -c %x "$M/g")" "2002-03-04 05:06:07.987654321 +0000"
eq "p mode" "$(stat -c %a "$M/p")" 2711
eq "sticky mode" "$(stat -c %a "$M/sticky")" 1777
eq "rodir mode" "$(stat -c %a "$M/rodir")" 555
eq "s target and owner" "$(readlink "$M/s") $(stat -c %u:%g "$M/s")" "g 42:43"
eq "read through s" "$(head -n 1 "$M/s")" replacement
[ "$(readlink "$M/longlink")" = "$long_target" ] || fail "the 1000-byte symlink target changed"
say "ok: the 1000-byte symlink target"
eq "nobody's file" "$(cat "$M/nobodys") $(stat -c '%a %u:%g' "$M/nobodys")" "mine
more 600 65534:65534"
check "the moved directory" test -d "$M/d2/x/d3"
expect_err "$EACCES" "nobody still cannot create in a 555 directory" as_nobody touch "$M/rodir/x"

say "--- remove everything"
check "rm -rf $M" rm -rf "$M"
expect_err "$ENOENT" "$M after rm -rf" stat "$M"
eq "the export root is empty" "$(ls -A /mnt | wc -l)" 0
