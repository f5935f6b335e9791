# Shared helpers of the demo tests: tests/kola/data is copied into every test's
# $KOLA_EXT_DATA, so a test sources them with `. "${KOLA_EXT_DATA}/demo-lib.sh"`.
fatal() {
    echo "fatal: $*" >&2
    exit 1
}
ok() {
    echo "ok: $*"
}
