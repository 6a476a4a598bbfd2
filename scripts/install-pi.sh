#!/usr/bin/env bash
# Install edge-agent as a systemd service on Raspberry Pi OS Bookworm (64-bit).
#
#   sudo scripts/install-pi.sh                      # configs/default.yaml -> edge-agent@default
#   sudo scripts/install-pi.sh --config garage --edgetpu --with-mosquitto
#   scripts/install-pi.sh --dry-run                 # print every step, change nothing
#   sudo scripts/install-pi.sh --uninstall [--purge]
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
MODELS_DIR=$STATE_DIR/models
CACHE_DIR=/var/cache/edge-agent
# The one place the Edge TPU runtime + libedgetpu pair is pinned (docs/coral.md).
PAIRS_FILE=agent/data/edgetpu-pairs.json
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
UNINSTALL=0
PURGE=0
MODEL=""
ACCEPT_LICENSE=0
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
  --edgetpu            also install the Edge TPU runtime pair pinned in
                       agent/data/edgetpu-pairs.json: tflite-runtime and a libedgetpu1-std
                       built for it (downloaded, checked against its sha256; docs/coral.md)
  --tflite-runtime     also pip install tflite-runtime (the agent's tflite-runtime extra)
  --review             also enable edge-agent-review.service (configs/review.yaml)
  --model NAME         then fetch model NAME from the catalog into /var/lib/edge-agent/models
                       (`edge-agent models fetch NAME`, run as the service user)
  --accept-license     with --model: accept the model's licence (passed to models fetch)
  --uninstall          stop and disable the services, remove the venv, the source copy, the
                       command link, the unit files and the udev rule; keep /etc/edge-agent,
                       /var/lib/edge-agent (data, models) and the service user
  --purge              with --uninstall: also remove those and the service user
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
        --model)
            [ $# -ge 2 ] || usage_error "--model needs a model NAME (see \`edge-agent models list\`)"
            MODEL=$2
            shift
            ;;
        --accept-license) ACCEPT_LICENSE=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
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
    check_option_combinations
}

check_option_combinations() {
    if [ "$UNINSTALL" = 1 ]; then
        local given=()
        [ "$CONFIG" = default ] || given+=(--config)
        [ "$WITH_MOSQUITTO" = 0 ] || given+=(--with-mosquitto)
        [ "$EDGETPU" = 0 ] || given+=(--edgetpu)
        [ "$TFLITE_RUNTIME" = 0 ] || given+=(--tflite-runtime)
        [ "$REVIEW" = 0 ] || given+=(--review)
        [ -z "$MODEL" ] || given+=(--model)
        [ "$ACCEPT_LICENSE" = 0 ] || given+=(--accept-license)
        [ "$START" = 1 ] || given+=(--no-start)
        [ "${#given[@]}" = 0 ] || usage_error "--uninstall takes only --purge, --root and --dry-run, not ${given[*]}"
        return
    fi
    [ "$PURGE" = 0 ] || usage_error "--purge goes with --uninstall"
    [ -f "$SOURCE/pyproject.toml" ] || usage_error "$SOURCE is not an edge-agent checkout (no pyproject.toml); use --source DIR"
    if [ -n "$MODEL" ] && [[ ! "$MODEL" =~ ^[A-Za-z0-9_.-]+$ ]]; then
        usage_error "model name '$MODEL' may hold only letters, digits, '_', '.' and '-' (see \`edge-agent models list\`)"
    fi
    [ "$ACCEPT_LICENSE" = 0 ] || [ -n "$MODEL" ] || usage_error "--accept-license goes with --model NAME"
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

require_root() {
    if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
        die "run as root (sudo $0 ...), or add --dry-run to see the steps"
    fi
}

preflight() {
    require_root
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
        packages+=(curl) # downloads the pinned libedgetpu package (install_edgetpu_pair)
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

# The Edge TPU pair for ARCH from $PAIRS_FILE, one value a line: library package, version, URL,
# sha256, then the runtime's pip requirement with every pinned wheel hash.
read_edgetpu_pair() {
    python3 - "$SOURCE/$PAIRS_FILE" "$1" <<'PYTHON'
import json, sys
pinned = json.load(open(sys.argv[1], encoding="utf-8"))["pinned"]
library, runtime = pinned["library"], pinned["runtime"]
deb = library["debs"].get(sys.argv[2], {})
hashes = " ".join(f"--hash=sha256:{wheel['sha256']}" for wheel in runtime["wheels"].values())
for value in (library["package"], library["version"], deb.get("url", ""), deb.get("sha256") or "",
              f"{runtime['pip_name']}=={runtime['version']} {hashes}"):
    print(value)
PYTHON
}

# The target's Debian architecture (amd64, arm64, ...).
target_arch() {
    local arch
    if arch=$(ask_target dpkg --print-architecture); then
        printf '%s\n' "$arch"
        return
    fi
    case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) uname -m ;;
    esac
}

# The TFLite runtime and the libedgetpu built for it, as pinned in $PAIRS_FILE: the library is
# downloaded and installed only when its sha256 matches the pin; the runtime goes into the venv
# with pip's hash checking.
install_edgetpu_pair() {
    local arch fields package version url sha256 requirement deb installed
    arch=$(target_arch)
    mapfile -t fields < <(read_edgetpu_pair "$arch") || true
    [ "${#fields[@]}" = 5 ] || die "cannot read $SOURCE/$PAIRS_FILE with python3"
    package=${fields[0]} version=${fields[1]} url=${fields[2]} sha256=${fields[3]} requirement=${fields[4]}
    say "Edge TPU pair: ${requirement%% *} + $package $version ($PAIRS_FILE)"
    [ -n "$url" ] || die "$PAIRS_FILE pins no $package for the architecture $arch (only arm64 and amd64)"
    [ -n "$sha256" ] || die "$PAIRS_FILE has no sha256 for $url: refusing to install an unchecked binary as root"
    # shellcheck disable=SC2016 # ${Version} is dpkg-query's format field, not a shell variable
    installed=$(ask_target dpkg-query -W -f='${Version}' "$package") || installed=""
    if [ "$installed" = "$version" ]; then
        say "keeping $package $version (already installed)"
    else
        deb=$CACHE_DIR/$(basename "$url")
        run install -d -m 0755 "$ROOT$CACHE_DIR"
        in_target curl -fsSL --retry 3 -o "$deb" "$url"
        # shellcheck disable=SC2016 # $1 and $2 belong to the inner sh (the digest and the file)
        if ! in_target sh -c 'printf "%s  %s\n" "$1" "$2" | sha256sum --check --strict --quiet -' sh "$sha256" "$deb"; then
            run rm -f "$ROOT$deb"
            die "$url does not match the sha256 pinned in $PAIRS_FILE: not installed (docs/coral.md)"
        fi
        in_target env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$deb"
    fi
    local requirements=$APP_DIR/edgetpu-runtime.txt
    if [ "$DRY_RUN" = 0 ]; then
        printf '%s\n' "$requirement" >"$ROOT$requirements"
    fi
    say "$requirements: $requirement"
    in_target "$VENV/bin/pip" install --no-deps --require-hashes -r "$requirements"
}

# `edge-agent models fetch NAME` as the service user, into the folder the service reads.
fetch_model() {
    say "model $MODEL into $MODELS_DIR"
    local command=(runuser -u "$SERVICE_USER" -- "$VENV/bin/edge-agent" models fetch "$MODEL" --dir "$MODELS_DIR")
    if [ "$ACCEPT_LICENSE" = 1 ]; then
        command+=(--accept-license)
    fi
    in_target "${command[@]}"
}

# ---------------------------------------------------------------------------- uninstall

# Units to stop and disable: every enabled or loaded edge-agent@NAME and the review service.
installed_units() {
    {
        find "$ROOT$UNIT_DIR" -path '*.wants/*' \( -name 'edge-agent@*.service' -o -name edge-agent-review.service \) \
            -printf '%f\n' 2>/dev/null
        if target_booted_with_systemd; then
            systemctl list-units --all --plain --no-legend 'edge-agent@*.service' edge-agent-review.service |
                awk '{print $1}'
        fi
    } | sort -u
}

stop_and_disable_units() {
    local unit link
    while read -r unit; do
        [ -n "$unit" ] || continue
        if [ -e "$ROOT$UNIT_DIR/${unit/@*./@.}" ]; then
            if target_booted_with_systemd; then
                run systemctl disable --now "$unit"
            else
                run systemctl --root="$ROOT" disable "$unit"
            fi
            continue
        fi
        # Its unit file is gone already: stop what still runs, remove the links left behind.
        if target_booted_with_systemd; then
            run systemctl stop "$unit" || true
        fi
        while read -r link; do
            run rm -f "$link"
        done < <(find "$ROOT$UNIT_DIR" -path "*.wants/$unit" 2>/dev/null)
    done < <(installed_units)
}

# remove_path PATH: rm -rf the target's PATH when it exists.
remove_path() {
    if [ -e "$ROOT$1" ] || [ -L "$ROOT$1" ]; then
        run rm -rf "$ROOT$1"
    fi
}

uninstall() {
    say "uninstall: services, venv, source copy, command link, unit files, udev rule"
    stop_and_disable_units
    local unit
    for unit in edge-agent@.service edge-agent-review.service; do
        remove_path "$UNIT_DIR/$unit"
    done
    if target_booted_with_systemd; then
        run systemctl daemon-reload
    fi
    if [ -L "$ROOT$COMMAND_LINK" ] && [ "$(readlink "$ROOT$COMMAND_LINK")" = "$VENV/bin/edge-agent" ]; then
        run rm -f "$ROOT$COMMAND_LINK"
    fi
    remove_path "$APP_DIR"
    if [ -e "$ROOT/etc/udev/rules.d/$UDEV_RULE" ]; then
        run rm -f "$ROOT/etc/udev/rules.d/$UDEV_RULE"
        if [ -z "$ROOT" ] && [ -S /run/udev/control ]; then
            run udevadm control --reload-rules
        fi
    fi
    remove_path "$CACHE_DIR"
    if [ "$PURGE" = 1 ]; then
        say "purge: configs, data and models, the service user"
        remove_path "$CONF_DIR"
        remove_path "$STATE_DIR"
        remove_path /var/lib/edge-agent-review
        if ask_target getent passwd "$SERVICE_USER" >/dev/null; then
            in_target userdel "$SERVICE_USER"
        fi
    else
        local kept=()
        for path in "$CONF_DIR" "$STATE_DIR" /var/lib/edge-agent-review; do
            [ ! -e "$ROOT$path" ] || kept+=("$path")
        done
        say "kept: ${kept[*]:-nothing to keep} and the user $SERVICE_USER (--purge removes them)"
    fi
    say "apt packages (libedgetpu1-std, mosquitto, python3-venv ...) stay installed: apt-get remove what you no longer use"
}

main() {
    parse_args "$@"
    if [ "$UNINSTALL" = 1 ]; then
        require_root
        if [ "$DRY_RUN" = 1 ]; then
            say "dry run: printing the steps, changing nothing"
        fi
        uninstall
        say "done"
        return
    fi
    resolve_config
    preflight
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: printing the steps, changing nothing"
    fi
    install_packages
    create_user
    create_directories
    install_agent
    if [ "$EDGETPU" = 1 ]; then
        install_edgetpu_pair
    fi
    link_command
    install_udev_rule
    install_config "$CONFIG_SOURCE" "$CONFIG_NAME"
    install_units
    if [ -n "$MODEL" ]; then
        fetch_model
    fi
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
        say "USB Coral: unplug and replug it once so the udev rule applies; \`edge-agent doctor\` then tries the pair"
    fi
}

main "$@"
