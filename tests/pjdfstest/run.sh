#!/usr/bin/env bash
# tests/pjdfstest/run.sh FS [group...] - pjdfstest on custodyfs's inbox/ or on s3fs, same server.
#
#   FS = custodyfs | s3fs. One local stack (mount-helpers/local-stack.sh --swift: PostgreSQL +
#   OpenStack Swift s3api, state in $ST, default /tmp/pjdp-stack) serves both.
#   custodyfs: this tree's build/fs/custodyfs, -o allow_other (default_permissions is on by
#   default), each group in inbox/pjd-<group>-<time>. s3fs (Debian's 1.90): bucket s3fs-pjd on
#   the same Swift, -o allow_other, each group in pjd-<group>-<time>.
#   Raw `prove -v` output in $OUTROOT/FS/<group>.raw (default OUTROOT=/tmp/pjdp-results),
#   passed/total per group in $OUTROOT/FS/summary.txt; each group bounded by $PJD_LIMIT s (900);
#   a fresh mount when the daemon died. pjdfstest itself is built outside the repository:
#   $PJD (default /work/pjdfstest), `autoreconf -ifs && ./configure && make pjdfstest`.
#   Runs as root (pjdfstest switches users; the stack's servers). Compare two runs with
#   tests/pjdfstest/diff.py.
set -u
FS=${1:?usage: run.sh custodyfs|s3fs [group...]}; shift
GROUPS_=("$@"); [ ${#GROUPS_[@]} -gt 0 ] || GROUPS_=(open mkdir rmdir unlink rename truncate ftruncate chmod utimensat chown link symlink mkfifo)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ST=${ST:-/tmp/pjdp-stack} MNT=/tmp/pjdp-mnt-$FS OUT=${OUTROOT:-/tmp/pjdp-results}/$FS
PJD=${PJD:-/work/pjdfstest}
mkdir -p "$OUT" "$MNT"
cfg() { sed -n "s/^$1 *= *//p" "$ST/custodyfs.conf" | head -1; }
remount() {
  fusermount3 -uz "$MNT" 2>/dev/null
  p=$(cat "$ST/$FS.pid" 2>/dev/null); [[ $p =~ ^[0-9]+$ ]] && kill -TERM "$p" 2>/dev/null; sleep 1
  if [ "$FS" = custodyfs ]; then
    setsid "$ROOT/build/fs/custodyfs" -f -o allow_other -o "config=$ST/custodyfs.conf" "$MNT" </dev/null >>"$ST/custodyfs.log" 2>&1 &
    echo $! >"$ST/$FS.pid"; TOP=$MNT/inbox
  else
    # the key holds a ':', so the AWSAccessKeyId=/AWSSecretKey= form; 0600 from the start
    (umask 077; printf 'AWSAccessKeyId=%s\nAWSSecretKey=%s\n' "$(cfg access_key_id)" "$(cfg secret_access_key)" >"$ST/s3fs.passwd")
    /usr/bin/python3 "$ROOT/tests/servers/s3ctl.py" --endpoint "$(cfg endpoint)" --key "$(cfg access_key_id)" \
      --secret "$(cfg secret_access_key)" mkbucket s3fs-pjd >/dev/null
    setsid s3fs s3fs-pjd "$MNT" -f -o allow_other -o passwd_file="$ST/s3fs.passwd" -o url="$(cfg endpoint)" \
      -o use_path_request_style -o endpoint=us-east-1 -o sigv4 </dev/null >>"$ST/s3fs.log" 2>&1 &
    echo $! >"$ST/$FS.pid"; TOP=$MNT
  fi
  for i in $(seq 1 100); do grep -qF " $MNT " /proc/self/mountinfo && timeout 5 test -d "$TOP" && return 0; sleep 0.2; done
  echo "mount failed"; return 1
}
CUSTODYFS_BIN=$ROOT/build/fs/custodyfs "$ROOT/mount-helpers/local-stack.sh" up /tmp/pjdp-mnt-stack --swift --state "$ST" >"$OUT/stack-up.log" 2>&1 || { cat "$OUT/stack-up.log"; exit 1; }
fusermount3 -u /tmp/pjdp-mnt-stack 2>/dev/null
remount || exit 1
: >"$OUT/summary.txt"
for g in "${GROUPS_[@]}"; do
  if ! timeout 5 test -d "$TOP" || ! kill -0 "$(cat "$ST/$FS.pid")" 2>/dev/null; then
    echo "$g: daemon gone before the group: fresh mount" | tee -a "$OUT/notes.txt"; remount || exit 1
  fi
  d=$TOP/pjd-$g-$(date +%s); mkdir "$d" || { echo "mkdir $d failed"; continue; }
  t0=$(date +%s)
  (cd "$d" && timeout -k 10 "${PJD_LIMIT:-900}" prove -v -r "$PJD/tests/$g") >"$OUT/$g.raw" 2>&1
  rc=$?
  alive=yes; kill -0 "$(cat "$ST/$FS.pid")" 2>/dev/null || alive=NO
  ok=$(grep -cE '^ok [0-9]+' "$OUT/$g.raw"); bad=$(grep -cE '^not ok [0-9]+' "$OUT/$g.raw")
  echo "$g: $ok/$((ok+bad)) prove-rc=$rc $(( $(date +%s)-t0 ))s daemon-alive=$alive" | tee -a "$OUT/summary.txt"
done
fusermount3 -u "$MNT"
