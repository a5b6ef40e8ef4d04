#!/usr/bin/env bash
# Installs the system packages the first build needs, if any is missing.
# good_lp's HiGHS backend (highs-sys) compiles HiGHS from source: that takes
# cmake and a C++ compiler, and bindgen needs libclang. Debian/Ubuntu only.
set -euo pipefail

packages=(cmake libclang-dev g++)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "setup: ${packages[*]} already installed"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
echo "setup: installing ${missing[*]}"
"${sudo[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
