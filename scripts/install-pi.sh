#!/usr/bin/env bash
# Install edge-agent as a systemd service on Raspberry Pi OS Bookworm (64-bit).
#
#   sudo scripts/install-pi.sh                      # configs/default.yaml -> edge-agent@default
#   sudo scripts/install-pi.sh --config garage --edgetpu --with-mosquitto
#   scripts/install-pi.sh --dry-run                 # print every step, change nothing
#
# Idempotent: run it again after updating the checkout to update the agent. An existing
# /etc/edge-agent/NAME.yaml is never overwritten. Run with --help for every option.
set -euo pipefail

APP_DIR=/opt/edge-agent
VENV=$APP_DIR/venv
SRC_DIR=$APP_DIR/src
COMMAND_LINK=/usr/local/bin/edge-agent
CONF_DIR=/etc/edge-agent
STATE_DIR=/var/lib/edge-agent
UNIT_DIR=/etc/systemd/system
UDEV_RULE=65-edge-agent-coral.rules
SERVICE_USER=edge-agent
# What the agent needs from the checkout (tests and caches stay behind).
SOURCE_ITEMS=(pyproject.toml README.md LICENSE agent export configs systemd scripts)

ROOT=""
DRY_RUN=0
START=1
CONFIG=default
WITH_MOSQUITTO=0
EDGETPU=0
TFLITE_RUNTIME=0
REVIEW=0
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<'EOF'
Usage: install-pi.sh [OPTIONS]

Installs edge-agent on Raspberry Pi OS Bookworm (64-bit): apt packages, a venv at
/opt/edge-agent/venv (with system site packages, so picamera2 is importable), the agent
(linked as /usr/local/bin/edge-agent), the Coral udev rule, the edge-agent user (groups video, plugdev), /etc/edge-agent/NAME.yaml,
the systemd units; then enables and starts edge-agent@NAME.

Options:
  --config NAME|FILE   config to install: configs/NAME.yaml, or a .yaml file whose name
                       (without .yaml) becomes NAME (default: default)
  --with-mosquitto     also install the Mosquitto MQTT broker
  --edgetpu            also install the Edge TPU runtime (libedgetpu1-std); needs Coral's
                       apt repository (the error says how to add it)
  --tflite-runtime     also pip install tflite-runtime (the agent's tflite-runtime extra)
  --review             also enable edge-agent-review.service (configs/review.yaml)
  --no-start           enable the service but do not (re)start it
  --root DIR           install into the system at DIR (a chroot: image builds and tests);
                       nothing is started there
  --source DIR         the edge-agent checkout to install (default: this script's checkout)
  --dry-run            print every step (the exact commands) and change nothing
  -h, --help           this help
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'install-pi.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'install-pi.sh: error: %s\n' "$*" >&2
    exit 1
}
usage_error() {
    printf 'install-pi.sh: error: %s (see --help)\n' "$*" >&2
    exit 2
}

# Print a command as it would be typed (quoting only what needs it), then run it unless --dry-run.
run() {
    local arg line="+"
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
            line+=" $arg"
        else
            line+=" '${arg//\'/\'\\\'\'}'"
        fi
    done
    printf '%s\n' "$line"
    if [ "$DRY_RUN" = 0 ]; then
        "$@"
    fi
}

# Run a command inside the target system (chroot for --root).
in_target() {
    if [ -n "$ROOT" ]; then
        run chroot "$ROOT" "$@"
    else
        run "$@"
    fi
}

# A read-only question to the target system; runs in --dry-run too. Fails when the target
# cannot answer (an empty --root), which callers read as "absent".
ask_target() {
    if [ -n "$ROOT" ]; then
        chroot "$ROOT" "$@" 2>/dev/null
    else
        "$@" 2>/dev/null
    fi
}

# apt_has_candidate PACKAGE: 0 when apt can install it, 1 when not, 2 when apt cannot be asked.
apt_has_candidate() {
    local policy
    policy=$(ask_target apt-cache policy "$1") || return 2
    printf '%s\n' "$policy" | grep -q 'Candidate: [^(]' || return 1
}

target_booted_with_systemd() {
    [ -z "$ROOT" ] && [ -d /run/systemd/system ]
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
        --config)
            [ $# -ge 2 ] || usage_error "--config needs a NAME or FILE"
            CONFIG=$2
            shift
            ;;
        --with-mosquitto) WITH_MOSQUITTO=1 ;;
        --edgetpu) EDGETPU=1 ;;
        --tflite-runtime) TFLITE_RUNTIME=1 ;;
        --review) REVIEW=1 ;;
        --no-start) START=0 ;;
        --root)
            [ $# -ge 2 ] || usage_error "--root needs a directory"
            ROOT=$2
            shift
            ;;
        --source)
            [ $# -ge 2 ] || usage_error "--source needs a directory"
            SOURCE=$2
            shift
            ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) usage_error "unknown option: $1" ;;
        esac
        shift
    done
    if [ -n "$ROOT" ]; then
        [ -d "$ROOT" ] || usage_error "--root $ROOT is not a directory"
        ROOT=$(cd "$ROOT" && pwd)
        if [ "$ROOT" = / ]; then
            ROOT=""
        fi
    fi
    [ -f "$SOURCE/pyproject.toml" ] || usage_error "$SOURCE is not an edge-agent checkout (no pyproject.toml); use --source DIR"
}

# Sets CONFIG_NAME and CONFIG_SOURCE from --config.
resolve_config() {
    if [[ "$CONFIG" == *.yaml || "$CONFIG" == */* ]]; then
        CONFIG_SOURCE=$CONFIG
        CONFIG_NAME=$(basename "$CONFIG" .yaml)
    else
        CONFIG_NAME=$CONFIG
        CONFIG_SOURCE=$SOURCE/configs/$CONFIG.yaml
    fi
    [[ "$CONFIG_NAME" =~ ^[A-Za-z0-9_.-]+$ ]] ||
        usage_error "config name '$CONFIG_NAME' may hold only letters, digits, '_', '.' and '-' (it names the service edge-agent@NAME)"
    if [ ! -f "$CONFIG_SOURCE" ]; then
        local available
        available=$(find "$SOURCE/configs" -maxdepth 1 -name '*.yaml' -printf '%f ' 2>/dev/null | sed 's/\.yaml / /g')
        usage_error "no config $CONFIG_SOURCE; pass --config with one of: ${available:-(none in $SOURCE/configs)} or a path to a .yaml file"
    fi
}

preflight() {
    if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
        die "run as root (sudo $0 ...), or add --dry-run to see the steps"
    fi
    local codename=""
    if [ -r "$ROOT/etc/os-release" ]; then
        codename=$(sed -n 's/^VERSION_CODENAME=//p' "$ROOT/etc/os-release")
    fi
    if [ "$codename" != bookworm ]; then
        warn "this installer targets Debian/Raspberry Pi OS bookworm; the target says '${codename:-unknown}'"
    fi
    if [ "$(uname -m)" != aarch64 ]; then
        warn "the agent targets 64-bit Raspberry Pi OS (aarch64); this machine is $(uname -m)"
    fi
}

install_packages() {
    say "apt packages"
    local packages=(ca-certificates python3 python3-venv)
    in_target env DEBIAN_FRONTEND=noninteractive apt-get update
    # Raspberry Pi OS only: plain Debian has no picamera2 and no libcamera Python bindings.
    local pkg found
    for pkg in python3-picamera2 python3-libcamera; do
        found=0
        apt_has_candidate "$pkg" || found=$?
        if [ "$found" = 0 ] || { [ "$found" = 2 ] && [ "$DRY_RUN" = 1 ]; }; then
            packages+=("$pkg")
        else
            warn "$pkg is not in this system's apt sources (Raspberry Pi OS only): skipped, so the picamera2 source is unavailable"
        fi
    done
    if [ "$WITH_MOSQUITTO" = 1 ]; then
        packages+=(mosquitto)
    fi
    if [ "$EDGETPU" = 1 ]; then
        found=0
        apt_has_candidate libedgetpu1-std || found=$?
        if [ "$found" = 1 ] || { [ "$found" = 2 ] && [ "$DRY_RUN" = 0 ]; }; then
            local message="libedgetpu1-std is not in the apt sources. Add Coral's repository, then run this again:
  echo 'deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main' | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg
  sudo apt-get update"
            if [ "$DRY_RUN" = 0 ]; then
                die "$message"
            fi
            warn "$message"
        fi
        packages+=(libedgetpu1-std)
    fi
    in_target env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
}

create_user() {
    say "service user $SERVICE_USER (groups video, plugdev)"
    local group
    for group in video plugdev; do
        if ! ask_target getent group "$group" >/dev/null; then
            in_target groupadd --system "$group"
        fi
    done
    if ! ask_target getent passwd "$SERVICE_USER" >/dev/null; then
        in_target useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-agent service" "$SERVICE_USER"
    fi
    in_target usermod --append --groups video,plugdev "$SERVICE_USER"
}

create_directories() {
    say "directories"
    run install -d -m 0755 "$ROOT$APP_DIR"
    run install -d -m 0750 "$ROOT$CONF_DIR"
    in_target chown "root:$SERVICE_USER" "$CONF_DIR"
    run install -d -m 0750 "$ROOT$STATE_DIR"
    in_target chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
}

install_agent() {
    say "agent source in $SRC_DIR, venv in $VENV"
    if [ "$SOURCE" -ef "$ROOT$SRC_DIR" ]; then
        say "installing from $SRC_DIR itself: not copying it onto itself"
    else
        run rm -rf "$ROOT$SRC_DIR"
        run install -d -m 0755 "$ROOT$SRC_DIR"
        local item
        for item in "${SOURCE_ITEMS[@]}"; do
            if [ -e "$SOURCE/$item" ]; then
                run cp -R "$SOURCE/$item" "$ROOT$SRC_DIR/"
            fi
        done
    fi
    if [ ! -x "$ROOT$VENV/bin/python" ]; then
        # System site packages: picamera2 and libcamera come from apt, not PyPI.
        in_target python3 -m venv --system-site-packages "$VENV"
    fi
    local requirement=$SRC_DIR
    if [ "$TFLITE_RUNTIME" = 1 ]; then
        requirement="${SRC_DIR}[tflite-runtime]"
    fi
    in_target "$VENV/bin/pip" install --upgrade "$requirement"
    in_target "$VENV/bin/edge-agent" --version
}

# /usr/local/bin/edge-agent -> the venv's, so `edge-agent` is on PATH (sudo's secure_path too).
link_command() {
    if [ -e "$ROOT$COMMAND_LINK" ] && [ ! -L "$ROOT$COMMAND_LINK" ]; then
        warn "$COMMAND_LINK exists and is not a link: left alone; the agent is $VENV/bin/edge-agent"
        return
    fi
    say "command $COMMAND_LINK -> $VENV/bin/edge-agent"
    if [ ! -d "$ROOT$(dirname "$COMMAND_LINK")" ]; then
        run install -d -m 0755 "$ROOT$(dirname "$COMMAND_LINK")"
    fi
    run ln -sfn "$VENV/bin/edge-agent" "$ROOT$COMMAND_LINK"
}

install_udev_rule() {
    say "udev rule for the Coral (USB 1a6e:089a and 18d1:9302, PCIe apex) -> group plugdev"
    run install -D -m 0644 "$SOURCE/systemd/$UDEV_RULE" "$ROOT/etc/udev/rules.d/$UDEV_RULE"
    if [ -z "$ROOT" ] && [ -S /run/udev/control ]; then
        run udevadm control --reload-rules
        run udevadm trigger --action=change --subsystem-match=usb --subsystem-match=apex
    fi
}

# install_config SOURCE_FILE NAME: /etc/edge-agent/NAME.yaml, kept when it exists.
install_config() {
    local dest=$CONF_DIR/$2.yaml
    if [ -e "$ROOT$dest" ]; then
        say "keeping existing $dest"
        return
    fi
    say "config $dest"
    run install -m 0640 "$1" "$ROOT$dest"
    in_target chown "root:$SERVICE_USER" "$dest"
}

install_units() {
    say "systemd units"
    local unit
    for unit in edge-agent@.service edge-agent-review.service; do
        run install -D -m 0644 "$SOURCE/systemd/$unit" "$ROOT$UNIT_DIR/$unit"
    done
    if target_booted_with_systemd; then
        run systemctl daemon-reload
    fi
}

# enable_and_start UNIT
enable_and_start() {
    # Without a running systemd (a chroot, an image build) systemctl enables offline.
    if [ -n "$ROOT" ]; then
        run systemctl --root="$ROOT" enable "$1"
    else
        run systemctl enable "$1"
    fi
    if [ "$START" = 1 ] && target_booted_with_systemd; then
        run systemctl restart "$1"
    else
        say "not starting $1 (--no-start, --root, or systemd is not running here)"
    fi
}

main() {
    parse_args "$@"
    resolve_config
    preflight
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: printing the steps, changing nothing"
    fi
    install_packages
    create_user
    create_directories
    install_agent
    link_command
    install_udev_rule
    install_config "$CONFIG_SOURCE" "$CONFIG_NAME"
    install_units
    say "service edge-agent@$CONFIG_NAME"
    enable_and_start "edge-agent@$CONFIG_NAME.service"
    if [ "$REVIEW" = 1 ]; then
        [ -f "$SOURCE/configs/review.yaml" ] || [ -e "$ROOT$CONF_DIR/review.yaml" ] ||
            die "--review needs configs/review.yaml in the checkout or an existing $CONF_DIR/review.yaml"
        if [ -f "$SOURCE/configs/review.yaml" ]; then
            install_config "$SOURCE/configs/review.yaml" review
        fi
        say "service edge-agent-review"
        enable_and_start edge-agent-review.service
    fi
    say "done. Check: systemctl status edge-agent@$CONFIG_NAME; journalctl -u edge-agent@$CONFIG_NAME -f"
    if [ "$EDGETPU" = 1 ]; then
        say "USB Coral: unplug and replug it once so the udev rule applies"
    fi
}

main "$@"
