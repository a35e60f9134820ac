# Scenario mount: the kernel client mounts dstore with explicit ports, and
# through dstore's own portmapper (--portmap) with a plain mount that names no
# port. Run by e2e_test.go: run -d 1G e2e/scripts/mount.sh [DSTORE]
set -e
. "$(dirname "$0")/common.sh"

say "start dstore serve with --portmap 127.0.0.1:$PMAP_PORT"
start_server --portmap "127.0.0.1:$PMAP_PORT"

say "mount with explicit ports (port=$NFS_PORT,mountport=$NFS_PORT)"
mount_nfs /mnt/a
opts=$(awk '$2 == "/mnt/a" { print $4 }' /proc/mounts)
case ",$opts," in *,vers=3,*) ;; *) fail "mount options '$opts' lack vers=3" ;; esac
case ",$opts," in *,proto=tcp,*) ;; *) fail "mount options '$opts' lack proto=tcp" ;; esac
say "ok: mounted: $opts"
check "write a file through the explicit-port mount" sh -c 'echo "through explicit ports" >/mnt/a/hello'
check "umount the explicit-port mount" umount /mnt/a

say "mount through the portmapper: mount -t nfs -o vers=3,nolock,addr=127.0.0.1 127.0.0.1:/ /mnt/b"
mkdir -p /mnt/b
mount -t nfs -o vers=3,nolock,addr=127.0.0.1 127.0.0.1:/ /mnt/b 2>"$ERR" ||
	fail "mount through the portmapper: $(cat "$ERR")"
grep -q ' /mnt/b nfs ' /proc/mounts || fail "/mnt/b is not an nfs mount"
opts=$(awk '$2 == "/mnt/b" { print $4 }' /proc/mounts)
say "ok: mounted: $opts"
case ",$opts," in *,vers=3,*) ;; *) fail "mount options '$opts' lack vers=3" ;; esac
# No rpcbind runs in the guest: only dstore's portmapper can have answered.
pgrep -x rpcbind >/dev/null 2>&1 && fail "an rpcbind runs in the guest: the test proves nothing"
drop_caches
eq "the file written through the first mount, read through the second" "$(cat /mnt/b/hello)" "through explicit ports"
check "write through the portmapper mount" sh -c 'echo again >>/mnt/b/hello && sync'
eq "line count after the append" "$(wc -l </mnt/b/hello)" 2
df -h /mnt/b | sed 's/^/    /'
check "umount the portmapper mount" umount /mnt/b

say "both mounts at once"
mount_nfs /mnt/a
mount -t nfs -o vers=3,nolock,addr=127.0.0.1 127.0.0.1:/ /mnt/b 2>"$ERR" || fail "second mount: $(cat "$ERR")"
check "create through one mount" sh -c 'echo both >/mnt/a/both'
eq "read through the other" "$(cat /mnt/b/both)" both
check "umount both" umount /mnt/a /mnt/b
