# shellcheck shell=bash disable=SC2034 # the variables are the callers'
# The options the control-plane benchmarks share, for their argument loops
# (sourced before them; lib.sh, which sets traps, comes after):
#
#   *) bench_option "$@" || { echo "ME: unknown argument: $1" >&2; exit 2; }
#      shift "$BENCH_SHIFT" ;;
#
# --daemon PATH, --ctl PATH, --out FILE, --cache-dir DIR, --label TEXT, each
# also as --name=VALUE; they set DAEMON, CTL_BIN, OUT, CACHE and LABEL.

BENCH_SHIFT=0

# bench_option ARGS...: takes $1 (and its value) when it is one of the shared
# options: sets the variable and BENCH_SHIFT (how many arguments it took).
# Fails, taking nothing, for any other argument.
bench_option() {
    local name value
    case $1 in
        --daemon | --ctl | --out | --cache-dir | --label)
            name=$1 value=${2:-} BENCH_SHIFT=2 ;;
        --daemon=* | --ctl=* | --out=* | --cache-dir=* | --label=*)
            name=${1%%=*} value=${1#*=} BENCH_SHIFT=1 ;;
        *) return 1 ;;
    esac
    case $name in
        --daemon) DAEMON=$value ;;
        --ctl) CTL_BIN=$value ;;
        --out) OUT=$value ;;
        --cache-dir) CACHE=$value ;;
        --label) LABEL=$value ;;
    esac
}
