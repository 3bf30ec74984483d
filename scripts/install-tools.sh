#!/usr/bin/env bash
# Install the Debian tools the tests drive when they are missing: prometheus and promtool
# (observability tests), shellcheck (script lint), logrotate (output rotation test). Needs root or
# sudo; says so otherwise.
set -euo pipefail
# A space-separated list, not an array: bash 3.2 (macOS) has no mapfile, and an empty array under
# `set -u` is an error before bash 4.4.
packages=""
want() {
  case " $packages " in
    *" $1 "*) ;;
    *) packages="${packages:+$packages }$1" ;;
  esac
}
command -v promtool >/dev/null 2>&1 || want prometheus
command -v prometheus >/dev/null 2>&1 || want prometheus
command -v shellcheck >/dev/null 2>&1 || want shellcheck
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || want logrotate
if [ -z "$packages" ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "tools: missing $packages; install them with apt-get as root" >&2
    exit 0
  fi
fi
echo "tools: installing $packages" >&2
$sudo apt-get update -qq >/dev/null
# shellcheck disable=SC2086 # $packages: one word per package, none with a space
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  $packages >/dev/null
