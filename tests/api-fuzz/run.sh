#!/usr/bin/env bash
# API fuzzing: schemathesis against the live server, from the server's own
# OpenAPI document (GET /openapi.json), for at most SECONDS of fuzzing.
#
#   tests/api-fuzz/run.sh [SECONDS]     # default 60; from anywhere
#
# Builds `mandate` (debug), starts `mandate serve` on a fresh data directory
# and a free port, seeds a little state (identities, a grant, budgets,
# reservations, answered approvals, an auditor key, an agent token) whose ids
# the fuzzer uses half of the time, runs `schemathesis run` with the checks of
# tests/api-fuzz/schemathesis.toml (no 5xx; every status, content type, header
# and body as the document declares; invalid input refused), then asserts that
# /healthz and /readyz still answer 200 and that SIGTERM stops the server with
# exit status 0. Exits non-zero, with a summary, on any failure.
#
# schemathesis comes from PyPI, pinned in tests/api-fuzz/requirements.txt,
# into the venv target/api-fuzz-venv; pip runs only when that venv does not
# hold exactly those requirements. Nothing else is downloaded.
#
# Environment: PYTHON (default python3) builds the venv; MANDATE_BIN runs that
# binary instead of building one; MANDATE_API_FUZZ_SEED fixes the seed (printed
# on every run) to replay a run.
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
    '' | *[!0-9]* | 0) echo "SECONDS must be a whole number above 0, not '$seconds'" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
root="$(pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="$target_dir/api-fuzz-venv"
requirements="$here/requirements.txt"

say() { printf 'api-fuzz: %s\n' "$*"; }
fail() { printf 'api-fuzz: FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- schemathesis
if cmp -s "$requirements" "$venv/requirements.installed" && "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
    say "$("$venv/bin/schemathesis" --version) (already in $venv)"
else
    say "installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv"
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv" || fail "cannot make a venv with ${PYTHON:-python3} (schemathesis needs CPython >= 3.11 with venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
        || fail "pip could not install $requirements"
    cp "$requirements" "$venv/requirements.installed"
    say "$("$venv/bin/schemathesis" --version)"
fi
py="$venv/bin/python"

# ---------------------------------------------------------------- the server
if [ -n "${MANDATE_BIN:-}" ]; then
    bin="$MANDATE_BIN"
else
    cargo build --quiet -p mandate
    bin="$target_dir/debug/mandate"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/mandate-api-fuzz.XXXXXX")"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

server_log_tail() {
    echo "--- server stderr (last 40 lines) ---" >&2
    tail -n 40 "$work/server.err" >&2 || true
    echo "---" >&2
}

# Diagnostics at `info` (no request bodies, no keys).
MANDATE_LOG="${MANDATE_LOG:-info}" "$bin" serve --data "$work/data" --addr 127.0.0.1:0 \
    >"$work/server.out" 2>"$work/server.err" </dev/null &
server_pid=$!

addr=""
for _ in $(seq 1 300); do
    addr="$(sed -n 's|^mandate: listening on http://\([^ ]*\) .*|\1|p' "$work/server.out" | head -n 1)"
    [ -n "$addr" ] && [ -s "$work/data/admin.key" ] && break
    kill -0 "$server_pid" 2>/dev/null || { server_log_tail; fail "the server exited before listening"; }
    sleep 0.1
done
[ -n "$addr" ] || { server_log_tail; fail "the server did not print its address within 30 s"; }
key="$(tr -d '[:space:]' <"$work/data/admin.key")"
url="http://$addr"
say "server pid $server_pid on $url, data in $work/data"

# ---------------------------------------------------------------- seed state
# call METHOD PATH [BODY]: prints the body; fails unless the status is 2xx.
call() {
    local status
    status="$(curl -sS -o "$work/answer" -w '%{http_code}' -X "$1" \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        ${3:+--data-binary "$3"} "$url$2")" || fail "seeding: $1 $2: curl failed"
    case "$status" in
        2??) cat "$work/answer" ;;
        *) server_log_tail; fail "seeding: $1 $2 answered $status: $(cat "$work/answer")" ;;
    esac
}
# field JSON PATH...: the string at that path of the JSON object.
field() {
    "$py" -c 'import json, sys
value = json.loads(sys.argv[1])
for step in sys.argv[2:]:
    value = value[step]
print(value)' "$@"
}

call POST /v1/identities '{"id": "user:alice", "kind": "human"}' >/dev/null
call POST /v1/identities '{"id": "agent:buyer", "kind": "agent", "parent": "user:alice"}' >/dev/null
call POST /v1/identities '{"id": "agent:buyer/search", "kind": "agent", "parent": "agent:buyer"}' >/dev/null
call POST /v1/identities '{"id": "user:bob", "kind": "human"}' >/dev/null
grant="$(field "$(call POST /v1/grants '{"grantor": "user:alice", "grantee": "agent:buyer",
    "actions": ["payments.charge"], "resources": ["merchant://books/*"], "limits": {"usd_cents": 50000}}')" id)"
budget="$(field "$(call POST /v1/budgets '{"id": "alice-usd", "identity": "user:alice",
    "dimension": "usd_cents", "period": "day", "limit": 1000000}')" id)"
call POST /v1/budgets '{"identity": "agent:buyer", "dimension": "calls", "period": "total", "limit": 1000}' >/dev/null
# Amounts of 1000 cents or more wait for a human.
call PUT /v1/policies '{"policies": "@id(\"big-needs-a-human\") @approval(\"required\") permit(principal, action, resource) when { context has amounts && context.amounts has usd_cents && context.amounts.usd_cents >= 1000 };\n@id(\"small-goes\") permit(principal, action, resource) when { !(context has amounts && context.amounts has usd_cents && context.amounts.usd_cents >= 1000) };"}' >/dev/null
charge() {
    call POST /v1/authorize "{\"identity\": \"agent:buyer\", \"action\": \"payments.charge\",
        \"resource\": \"merchant://books/$1\", \"amounts\": {\"usd_cents\": $2}}"
}
held="$(field "$(charge 1 500)" reservation id)"
settled="$(field "$(charge 2 700)" reservation id)"
call POST "/v1/reservations/$settled/settle" '{"amounts": {"usd_cents": 650}}' >/dev/null
# Approvals are answered before the fuzzer sees them: `GET /v1/approvals/{id}?wait_s=N`
# on a pending one is a long poll of up to 60 s, by design.
answer="$(charge 3 5000)"
approved="$(field "$answer" approval id)"
call POST "/v1/approvals/$approved/approve" '{"approver": "user:alice"}' >/dev/null
denied="$(field "$(charge 4 6000)" approval id)"
call POST "/v1/approvals/$denied/deny" '{"approver": "user:alice"}' >/dev/null
auditor="$(field "$(call POST /v1/admin-keys '{"role": "auditor"}')" id)"
answer="$(call POST /v1/tokens '{"identity": "agent:buyer", "ttl_s": 3600, "scopes": ["payments.*"]}')"
token="$(field "$answer" token)"
token_id="$(field "$answer" id)"
say "seeded: 4 identities, grant $grant, budget $budget, reservations $held (held) and $settled (settled), approvals $approved (approved) and $denied (denied), auditor key $auditor, agent token $token_id"

# ---------------------------------------------------------------- fuzz
seed="${MANDATE_API_FUZZ_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
config="$work/schemathesis.toml"
# dictionary NAME VALUE...: a TOML table of string values.
dictionary() {
    printf '\n[dictionaries.%s]\nvalues = [' "$1"
    shift
    printf '"%s", ' "$@"
    printf ']\n'
}
# by_path REGEX DICTIONARY: `{id}` of the operations under that path, half of
# the time one of the seeded ids (the other half, whatever is generated).
by_path() {
    printf '\n[[operations]]\ninclude-path-regex = "%s"\n' "$1"
    printf 'parameters = { "path.id" = { dictionary = "%s", probability = 0.5 } }\n' "$2"
}
{
    cat "$here/schemathesis.toml"
    printf '\n# ---- appended by run.sh: the ids seeded in this run\n'
    dictionary identities user:alice agent:buyer agent:buyer/search user:bob
    dictionary grants "$grant"
    dictionary budgets "$budget"
    dictionary reservations "$held" "$settled"
    dictionary approvals "$approved" "$denied"
    dictionary admin_keys "$auditor"
    dictionary tokens "$token"
    dictionary token_ids "$token_id"
    # Log indexes and sizes around the seeded log's.
    printf '\n[dictionaries.sizes]\nvalues = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17]\n'
    printf '\n[parameters]\n'
    for name in query.grantee query.identity query.parent body.identity body.grantee body.grantor body.parent \
        'body.requests[*].identity'; do
        printf '"%s" = { dictionary = "identities", probability = 0.5 }\n' "$name"
    done
    for name in query.start query.end query.index query.size query.from query.to; do
        printf '"%s" = { dictionary = "sizes", probability = 0.5 }\n' "$name"
    done
    by_path '^/v1/identities/' identities
    by_path '^/v1/grants/' grants
    by_path '^/v1/budgets/' budgets
    by_path '^/v1/reservations/' reservations
    by_path '^/v1/approvals/' approvals
    by_path '^/v1/admin-keys/' admin_keys
    printf '\n[[operations]]\ninclude-path-regex = "^/v1/tokens/(introspect|revoke)$"\n'
    printf 'parameters = { "body.token" = { dictionary = "tokens", probability = 0.5 }, '
    printf '"body.id" = { dictionary = "token_ids", probability = 0.5 } }\n'
    # Claude Code's HTTP hook answers every PreToolUse with 200 (a block
    # unless an agent token's call is allowed), authenticated or not, whatever
    # the body: Claude Code runs the tool after an error status. So "refuse
    # without a key" and "refuse invalid input" do not apply to it (its
    # other events do refuse a missing key: tests/hooks_http.rs).
    printf '\n[[operations]]\ninclude-path = "/v1/hooks/claude-code"\n'
    printf 'checks = { ignored_auth = { enabled = false }, missing_required_header = { enabled = false }, '
    printf 'negative_data_rejection = { enabled = false } }\n'
} >"$config"

say "schemathesis for at most $seconds s against $url/openapi.json (seed $seed; MANDATE_API_FUZZ_SEED=$seed replays it)"
started=$SECONDS
report="$target_dir/api-fuzz-report.xml"
rm -f "$report"
fuzz_status=0
# --max-time bounds the run; `timeout` is there only in case a request hangs.
(cd "$work" && MANDATE_API_FUZZ_KEY="$key" timeout --kill-after=10 "$((seconds + 120))" \
    "$venv/bin/schemathesis" --config-file "$config" --no-color run "$url/openapi.json" \
    --max-time "$seconds" \
    --seed "$seed" \
    --report junit --report-junit-path "$report") || fuzz_status=$?
say "schemathesis finished in $((SECONDS - started)) s with exit status $fuzz_status"
[ "$fuzz_status" -ne 124 ] || fuzz_status_note=" (killed: it ran past $((seconds + 120)) s)"

# ---------------------------------------------------------------- after
problems=()
if [ "$fuzz_status" -ne 0 ]; then
    problems+=("schemathesis: exit status $fuzz_status${fuzz_status_note:-}; each failure, its response and a curl line are above")
    # One line per operation and failed check, from the JUnit report.
    while IFS= read -r line; do problems+=("$line"); done < <("$py" - "$report" <<'PY' 2>/dev/null || true
import re, sys, xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).iter("testcase"):
    for failure in [*case.iter("failure"), *case.iter("error")]:
        lines = [line.strip() for line in (failure.text or failure.get("message") or "error").splitlines()]
        seen = set()
        for i, line in enumerate(lines):
            if not re.match(r"- ST\d+ ", line):
                continue
            after = [x for x in lines[i + 1 : i + 8] if x][:3]
            if after and after[0].startswith("Received:"):
                detail = "; ".join(after[:2])
            elif len(after) > 2 and after[2].startswith("Invalid component:"):
                detail = after[2]
            else:
                detail = after[0] if after and not after[0].startswith(("- ST", "[")) else ""
            entry = f"{case.get('name')}: {line[2:]}" + (f" ({detail})" if detail else "")
            if entry not in seen:
                seen.add(entry)
                print(entry)
        if not seen:
            print(f"{case.get('name')}: {lines[0] if lines else 'error'}")
PY
)
fi
for path in /healthz /readyz; do
    status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$url$path" || echo 'no answer')"
    [ "$status" = 200 ] || problems+=("GET $path answered $status after fuzzing, not 200")
done

kill -TERM "$server_pid"
exit_status=""
for _ in $(seq 1 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        exit_status=0
        wait "$server_pid" || exit_status=$?
        break
    fi
    sleep 0.1
done
if [ -z "$exit_status" ]; then
    problems+=("the server did not stop within 30 s of SIGTERM")
else
    server_pid=""
    [ "$exit_status" -eq 0 ] || problems+=("the server exited with status $exit_status after SIGTERM, not 0")
fi
# The first start prints the key once on stdout, and nowhere else.
if [ "$(grep -cF "$key" "$work/server.out")" -gt 1 ] || grep -qF "$key" "$work/server.err"; then
    problems+=("the admin key appears in the server's output beyond its first-start notice")
fi

if [ "${#problems[@]}" -ne 0 ]; then
    [ "$exit_status" = 0 ] || server_log_tail
    printf 'api-fuzz: FAILED:\n' >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
fi
say "passed: no failure in $((SECONDS - started)) s of fuzzing; /healthz and /readyz 200 after; SIGTERM exit 0"
