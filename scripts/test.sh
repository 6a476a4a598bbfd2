#!/usr/bin/env bash
# The project's test command: installs what the tests need, then lint, types and the test suite.
#   ./scripts/test.sh [pytest args...]
#   ./scripts/test.sh -m slow      # only the opt-in system builds (debootstrap roots), deselected by default
# Needs Python 3.11 and, for the MQTT tests, the Debian package `mosquitto` (installed here when
# missing, with sudo when not root). Creates/updates the virtual environment in .venv, and one with
# TensorFlow in .venv-train for the training test (EDGE_AGENT_SKIP_TRAIN=1: not), and one with a real
# OctoPrint in .venv-octoprint for the pause test (EDGE_AGENT_SKIP_OCTOPRINT=1: not).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_packages=()
[ -x /usr/sbin/mosquitto ] || apt_packages+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || [ -x /usr/bin/mosquitto_passwd ] || apt_packages+=(mosquitto)
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
command -v shellcheck >/dev/null 2>&1 || apt_packages+=(shellcheck)
# The system-build tests (-m slow) need debootstrap; the default run deselects them (pyproject addopts).
selects_slow() {
    local previous="" arg marker
    for arg in "$@"; do
        marker=""
        if [ "$previous" = -m ]; then
            marker=$arg
        elif [[ "$arg" == -m?* ]]; then
            marker=${arg#-m}
        fi
        if [[ "$marker" == *slow* && "$marker" != *"not slow"* ]]; then
            return 0
        fi
        previous=$arg
    done
    return 1
}
if selects_slow "$@"; then
    command -v debootstrap >/dev/null 2>&1 || apt_packages+=(debootstrap)
fi
command -v systemd-analyze >/dev/null 2>&1 || apt_packages+=(systemd)
if [ "${#apt_packages[@]}" -gt 0 ]; then
    echo "== installing system packages: ${apt_packages[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "== installing edge-agent with its test extras"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

# The one-minute training test needs TensorFlow (the `train` extra, ~30 s to install): it gets its
# own venv so the agent's venv stays as a Pi has it. EDGE_AGENT_SKIP_TRAIN=1 skips it.
if [ "${EDGE_AGENT_SKIP_TRAIN:-0}" != 1 ] && [ -z "${EDGE_AGENT_TRAIN_PYTHON:-}" ]; then
    echo "== installing the train extra (TensorFlow) into .venv-train"
    if { [ -x .venv-train/bin/python ] || "$PYTHON" -m venv .venv-train; } \
        && .venv-train/bin/python -m pip install -q --disable-pip-version-check -e ".[train]"; then
        export EDGE_AGENT_TRAIN_PYTHON="$PWD/.venv-train/bin/python"
    else
        echo "   TensorFlow does not install here: the training test will be skipped" >&2
    fi
fi

# A real OctoPrint 1.11 with its virtual printer for the pause test (tests/test_octoprint_real.py), in
# its own venv: it pins its own Flask and Tornado (~1 min to install from PyPI, seconds once cached).
# EDGE_AGENT_SKIP_OCTOPRINT=1 skips it; so does a failed install (the test then says why it skipped).
if [ "${EDGE_AGENT_SKIP_OCTOPRINT:-0}" != 1 ] && [ -z "${EDGE_AGENT_OCTOPRINT:-}" ]; then
    echo "== installing OctoPrint (virtual printer) into .venv-octoprint"
    if { [ -x .venv-octoprint/bin/python ] || "$PYTHON" -m venv .venv-octoprint; } \
        && .venv-octoprint/bin/python -m pip install -q --disable-pip-version-check "octoprint>=1.11,<1.12"; then
        export EDGE_AGENT_OCTOPRINT="$PWD/.venv-octoprint/bin/octoprint"
    else
        echo "   OctoPrint does not install here: the real-OctoPrint test will be skipped" >&2
    fi
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q -ra "$@"
