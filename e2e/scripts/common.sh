# Helpers for the e2e scenario scripts. Sourced, inside the User-Mode Linux
# guest started by ../shared/uml-nfs/run, by every scenario:
#
#     . "$(dirname "$0")/common.sh"
#
# The scenario's arguments: the dstore binary (default ./bin/dstore, relative
# to the directory `run` was called from), and the guest's time limit (run
# -t) in seconds, if any: 20 s before it, a watchdog prints what is stuck
# (tasks blocked in the kernel, the server's goroutines) so that a hang says
# where it is. The datastore lives on the guest's scratch disk (run -d SIZE),
# the server log in the guest's /run.
#
# Conventions: say prints what is being checked, fail stops the scenario with
# a message; on any exit the cleanup below unmounts what is mounted, stops
# the server with SIGTERM (it must exit 0) and, after a failure, prints the
# end of the server log.

. "$UMLNFS_LIB"

DSTORE=${1:-./bin/dstore}
case $DSTORE in /*) ;; *) DSTORE=$(pwd)/$DSTORE ;; esac
[ -x "$DSTORE" ] || { echo "FAIL: no dstore binary at $DSTORE (make build)" >&2; exit 1; }
[ -d /run/scratch ] || { echo "FAIL: no scratch disk at /run/scratch: run with -d SIZE" >&2; exit 1; }

DATA=${DATA:-/run/scratch/ds}
NFS_PORT=2049
PMAP_PORT=111
SERVER_LOG=/run/dstore.log
SERVER_PID=
SERVER_ARGS=
SERVER_STARTED=
ERR=/run/e2e.err
: >"$SERVER_LOG"

# now: seconds since the guest booted (no fork).
now() { read -r _now _ </proc/uptime; echo "${_now}"; }

# since T0: seconds elapsed since T0 (a value of now).
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

say() {
	read -r _up _ </proc/uptime
	printf '[%7s] %s\n' "$_up" "$*"
}

fail() {
	say "FAIL: $*" >&2
	exit 1
}

# check DESCRIPTION CMD...: CMD must succeed.
check() {
	_what=$1
	shift
	if "$@" 2>"$ERR"; then
		say "ok: $_what"
	else
		_rc=$?
		fail "$_what: '$*' exited $_rc: $(head -c 500 "$ERR")"
	fi
}

# expect_err ERRNO_TEXT DESCRIPTION CMD...: CMD must fail, and its error
# message must carry ERRNO_TEXT (the strerror text of the expected errno,
# e.g. "Directory not empty" for ENOTEMPTY).
expect_err() {
	_want=$1
	_what=$2
	shift 2
	if "$@" >/dev/null 2>"$ERR"; then
		fail "$_what: '$*' succeeded, want it to fail with '$_want'"
	fi
	if ! grep -q "$_want" "$ERR"; then
		fail "$_what: '$*' failed with '$(head -c 500 "$ERR")', want '$_want'"
	fi
	say "ok: $_what: $(echo "$_want" | sed 's/\\|/ or /g')"
}

# eq DESCRIPTION GOT WANT
eq() {
	[ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
	say "ok: $1 = $3"
}

# as_nobody CMD...: run CMD as uid/gid 65534 with no supplementary groups.
as_nobody() {
	if command -v setpriv >/dev/null 2>&1; then
		setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"
	else
		su nobody -s /bin/sh -c '"$0" "$@"' "$@"
	fi
}

# start_server [SERVE FLAGS...]: start dstore serve in the background and wait
# until it listens. The flags are remembered for restart_server.
start_server() {
	[ $# -gt 0 ] && SERVER_ARGS="$*"
	SERVER_STARTED=1
	echo "--- dstore serve $SERVER_ARGS (at $(now)s)" >>"$SERVER_LOG"
	# shellcheck disable=SC2086
	"$DSTORE" serve --data "$DATA" --nfs "127.0.0.1:$NFS_PORT" $SERVER_ARGS >>"$SERVER_LOG" 2>&1 &
	SERVER_PID=$!
	echo "$SERVER_PID" >/run/dstore.pid
	wait_port "$NFS_PORT" 60 || fail "the server does not listen on $NFS_PORT (see the server log)"
	case " $SERVER_ARGS " in *" --portmap "*)
		wait_port "$PMAP_PORT" 10 || fail "the portmapper does not listen on $PMAP_PORT" ;;
	esac
}

server_alive() { [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; }

# stop_server: SIGTERM; the server must drain, sync and exit 0.
stop_server() {
	[ -n "$SERVER_PID" ] || return 0
	_pid=$SERVER_PID
	SERVER_PID=
	kill -TERM "$_pid" 2>/dev/null || true
	_rc=0
	wait "$_pid" || _rc=$?
	[ "$_rc" -eq 0 ] || fail "the server exited $_rc after SIGTERM, want 0"
	say "ok: the server exited 0 after SIGTERM"
}

# kill_server: SIGKILL, no chance to sync.
kill_server() {
	[ -n "$SERVER_PID" ] || return 0
	kill -KILL "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=
}

# mount_nfs DIR [OPTS]: mount the export / with explicit ports (no rpcbind).
mount_nfs() {
	nfs_mount 127.0.0.1 "$NFS_PORT" "$NFS_PORT" / "$1" "${2:-}" 2>"$ERR" ||
		fail "mount with explicit ports on $1: $(cat "$ERR")"
	grep -q " $1 nfs " /proc/mounts || fail "$1 is not an nfs mount after mount"
}

# nfs_mounts, loop_mounts: mount points, innermost last.
nfs_mounts() { awk '$3 == "nfs" { print $2 }' /proc/mounts; }
loop_mounts() { awk '$1 ~ /^\/dev\/loop/ { print $2 }' /proc/mounts; }

# diagnose: what the guest is waiting on. Ends the server (SIGQUIT makes a
# Go program print every goroutine's stack and exit).
diagnose() {
	say "WATCHDOG: diagnostics"
	grep -e '^proc3' -e '^rpc' /proc/net/rpc/nfs | sed 's/^/    nfs client: /'
	for _d in /proc/[0-9]*/task/[0-9]*; do
		read -r _st <"$_d/stat" 2>/dev/null || continue
		case $_st in *") D "*)
			_p=${_d#/proc/}
			echo "    blocked (D): pid ${_p%%/*} tid ${_d##*/} $(cat "/proc/${_p%%/*}/cmdline" 2>/dev/null | tr '\0' ' ' | cut -c1-120)" \
				"wchan=$(cat "$_d/wchan" 2>/dev/null)"
			sed 's/^/        /' "$_d/stack" 2>/dev/null | head -n 20
			;;
		esac
	done
	dmesg | grep -i -e 'nfs:' -e 'oom' -e 'out of memory' -e 'blocked for more' -e 'killed process' |
		tail -n 15 | sed 's/^/    dmesg: /'
	_spid=$(cat /run/dstore.pid 2>/dev/null)
	if [ -n "$_spid" ] && kill -0 "$_spid" 2>/dev/null; then
		say "the server's goroutines (SIGQUIT; dstore frames only):"
		_lines=$(wc -l <"$SERVER_LOG")
		kill -CONT "$_spid"
		kill -QUIT "$_spid"
		sleep 3
		tail -n +"$((_lines + 1))" "$SERVER_LOG" |
			awk '/^goroutine /{ print; next } /github.com\/dstore\/dstore/{ print; getline; print }' |
			head -n 400 | sed 's/^/    /'
	fi
}

WATCHDOG_PID=
if [ -n "${2:-}" ] && [ "$2" -gt 40 ]; then
	(
		read -r _up _ </proc/uptime
		sleep $(($2 - 20 - ${_up%.*}))
		say "WATCHDOG: the scenario still runs $(($2 - 20))s after the guest started; it will be stopped at ${2}s"
		diagnose
	) &
	WATCHDOG_PID=$!
fi

cleanup() {
	_rc=$?
	set +e
	[ -z "$WATCHDOG_PID" ] || kill "$WATCHDOG_PID" 2>/dev/null
	cd /
	# A failed scenario may leave the server dead under a hard mount, where
	# umount and the guest's final sync would wait forever: bring it back.
	if [ -n "$(nfs_mounts)" ] && ! server_alive && [ -n "$SERVER_STARTED" ]; then
		SERVER_PID=
		# shellcheck disable=SC2086
		"$DSTORE" serve --data "$DATA" --nfs "127.0.0.1:$NFS_PORT" $SERVER_ARGS >>"$SERVER_LOG" 2>&1 &
		SERVER_PID=$!
		wait_port "$NFS_PORT" 30
	fi
	for m in $(loop_mounts | sort -r); do umount "$m" || umount -l "$m"; done
	for m in $(nfs_mounts | sort -r); do
		timeout 60 umount "$m" || umount -f -l "$m"
	done
	if server_alive; then
		kill -TERM "$SERVER_PID"
		_src=0
		wait "$SERVER_PID" || _src=$?
		if [ "$_src" -ne 0 ]; then
			say "FAIL: the server exited $_src after SIGTERM at cleanup, want 0" >&2
			[ "$_rc" -ne 0 ] || _rc=1
		fi
	fi
	if grep -q -e '^panic' -e 'goroutine [0-9]* \[' "$SERVER_LOG"; then
		say "FAIL: the server log has a panic" >&2
		[ "$_rc" -ne 0 ] || _rc=1
	fi
	_n=$(grep -c -e 'level=ERROR' -e 'level=WARN' "$SERVER_LOG")
	if [ "$_n" -gt 0 ]; then
		say "server log: $_n WARN/ERROR lines, the first 20:"
		grep -e 'level=ERROR' -e 'level=WARN' "$SERVER_LOG" | head -n 20 | cut -c1-400
	fi
	if [ "$_rc" -ne 0 ]; then
		say "the last 40 lines of the server log:"
		tail -n 40 "$SERVER_LOG" | cut -c1-400
		say "SCENARIO FAILED ($_rc)"
	else
		say "SCENARIO PASSED"
	fi
	exit "$_rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
