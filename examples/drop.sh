#!/bin/sh
# drop.sh - drop files into custodyfs's inbox/ from a legacy tool or a cron
# job, and say plainly whether each one is received.
#
#   drop.sh MOUNTPOINT [-d SUBDIR] FILE...
#
# Each FILE is copied under a temporary name (NAME.part, one of the default
# temp_patterns: never uploaded nor logged), then renamed to NAME: custodyfs
# uploads it and commits its reception_audit row during that rename, and mv
# returns 0 only when both are done. Nobody sees half a file under its final
# name, and an interrupted copy leaves only a NAME.part in the mount's spool
# (never in the bucket). An existing NAME in inbox/ is overwritten (the old
# row gets removed_at).
# Exit status: 0 when every file was received, 1 when one failed (the others
# are still dropped; the failed one's NAME.part is removed), 2 for usage.
set -u

usage() {
	echo "usage: $0 MOUNTPOINT [-d SUBDIR] FILE..." >&2
	exit 2
}

[ $# -ge 2 ] || usage
mnt=$1
shift
sub=
if [ "$1" = -d ]; then
	[ $# -ge 3 ] || usage
	sub=$2
	shift 2
fi
inbox=$mnt/inbox${sub:+/$sub}
if [ ! -d "$mnt/inbox" ]; then
	echo "$0: $mnt is not a custodyfs mount (no inbox/)" >&2
	exit 2
fi
mkdir -p -- "$inbox" || exit 1

rc=0
for f in "$@"; do
	name=$(basename -- "$f")
	if [ ! -f "$f" ]; then
		echo "$0: $f: not a regular file" >&2
		rc=1
		continue
	fi
	if cp -- "$f" "$inbox/$name.part" && mv -f -- "$inbox/$name.part" "$inbox/$name"; then
		echo "received: ${sub:+$sub/}$name"
	else
		echo "$0: $f: NOT received" >&2
		rm -f -- "$inbox/$name.part"
		rc=1
	fi
done
exit $rc
