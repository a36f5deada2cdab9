#!/usr/bin/env bash
# The classic flow on the embedded spool/: good and failing jobs, workers, a retry with
# backoff landing in the dead-letter queue, a retry from the DLQ, a schedule firing, a graceful
# stop, and stats over what ran.
source "$(dirname "$0")/_env.sh"
cd "$ROOT"
export SPOOLQ_DIR="$ROOT/spool"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() {  # print the command as you would type it, then run it
    local line='$' arg
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./=:@%+-]+$ ]]; then line+=" $arg"; else line+=" '${arg//\'/\'\\\'\'}'"; fi
    done
    printf '%s\n' "$line"
    "$@"
}

step "start from an empty embedded spool ($SPOOLQ_DIR)"
spoolq worker stop --wait --timeout 30 >/dev/null 2>&1 || true
find "$SPOOLQ_DIR" -mindepth 1 ! -name .gitkeep -delete
chmod go-w "$SPOOLQ_DIR"  # a checkout made under umask 002 leaves it group-writable, which spoolq refuses
show spoolq init
show spoolq config set max_retries 2
show spoolq config set backoff_base 2

step "enqueue jobs: the forms the CLI takes"
show spoolq enqueue 'echo "hello from $SPOOLQ_JOB_ID"'
show spoolq enqueue --cmd 'sleep 1; echo slow job done' --id slow
show spoolq enqueue --cmd 'echo urgent' --id urgent --priority 10
show spoolq enqueue '{"id": "later", "command": "date -u", "delay": 2}'
printf '%s\n' '{"id": "batch-1", "command": "echo one"}' '{"id": "batch-2", "command": "echo two"}' \
    | show spoolq enqueue --batch -
step "a periodic schedule: every minute, one job per slot, whichever worker gets there first"
show spoolq schedule add tick '* * * * *' --cmd 'echo "tick $SPOOLQ_JOB_ID"'
tick_slot="tick.$(date -u -d "@$(( ($(date +%s) / 60 + 1) * 60 ))" +%Y%m%dT%H%MZ)"
step "a job that fails until a file exists: it will retry with backoff, then die"
show spoolq enqueue --id flaky --cmd 'test -e "$SPOOLQ_SPOOL/demo.flag" && echo fixed || { echo "no flag yet" >&2; exit 1; }'
show spoolq status
show spoolq list

step "start two workers in the background"
show spoolq worker start --count 2 --detach
show spoolq worker list

step "wait for the good jobs"
show spoolq wait urgent slow later batch-1 batch-2
show spoolq logs slow

step "watch flaky retry (2 s, then 4 s backoff) and land in the dead-letter queue"
t0=$(date +%s)
show spoolq wait flaky --timeout 30 || echo "(wait exits 1: flaky is dead, after $(( $(date +%s) - t0 )) s)"
show spoolq dlq list
show spoolq logs flaky

step "fix the cause, retry it from the DLQ"
touch "$SPOOLQ_DIR/demo.flag"
show spoolq dlq retry flaky
show spoolq wait flaky --timeout 30
show spoolq show flaky

step "the schedule's next slot fires (within a minute of adding it): its job has the slot in its id"
printf '$ until spoolq show %s >/dev/null 2>&1; do sleep 1; done   # enqueued at the minute\n' "$tick_slot"
for _ in $(seq 75); do spoolq show "$tick_slot" >/dev/null 2>&1 && break; sleep 1; done
show spoolq wait "$tick_slot" --timeout 30
show spoolq schedule list
show spoolq logs "$tick_slot"
show spoolq schedule rm tick

step "stop gracefully and show the final state, and what happened (the attempts log)"
show spoolq worker stop --wait --timeout 30
show spoolq status
show spoolq stats --since 10m
printf '\nThe spool is a directory: look around in %s\n' "$SPOOLQ_DIR"
