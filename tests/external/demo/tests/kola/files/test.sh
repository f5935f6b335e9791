#!/bin/bash
# kola: { "exclusive": false, "description": "reads its data/ and the shared tests/kola/data through KOLA_EXT_DATA" }
set -xeuo pipefail
. "${KOLA_EXT_DATA}/demo-lib.sh"
test -d "${KOLA_EXT_DATA}" || fatal "KOLA_EXT_DATA=${KOLA_EXT_DATA} is not a directory"
grep -qx "hello from the test's data directory" "${KOLA_EXT_DATA}/greeting.txt" \
    || fatal "unexpected greeting.txt"
ok "read ${KOLA_EXT_DATA}/greeting.txt"
