#!/usr/bin/env bash
# Install lavapipe, Mesa's software Vulkan 1.3 device, so that the wgpu tests
# (`cargo test --features wgpu`) run on a machine without a GPU (CI).
#
# Usage: scripts/install-vulkan.sh      (Debian/Ubuntu, as root or with sudo)
#
# Idempotent: packages already installed are not fetched again. Ends by checking that the
# Vulkan loader lists a device, and fails (exit 1) if it does not.
set -euo pipefail

packages=(mesa-vulkan-drivers libvulkan1 vulkan-tools)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-vulkan: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "install-vulkan: ${packages[*]} already installed"
fi

# vulkaninfo wants a runtime dir; a headless CI job has none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
if ! summary=$(vulkaninfo --summary 2>/dev/null); then
    echo "install-vulkan: vulkaninfo failed: no usable Vulkan device" >&2
    exit 1
fi
devices=$(grep -E "deviceName|deviceType|apiVersion" <<<"$summary" || true)
if [ -z "$devices" ]; then
    echo "install-vulkan: the Vulkan loader lists no device" >&2
    exit 1
fi
echo "install-vulkan: Vulkan devices:"
echo "$devices"
