#!/usr/bin/env bash
# Installs the system packages the first build and the tests need, if any is
# missing. good_lp's HiGHS backend (highs-sys) compiles HiGHS from source:
# that takes cmake and a C++ compiler, and bindgen needs libclang. The replay
# report's test opens report.html in headless Chromium (with a font, so that
# its labels have a size). The live dashboard test runs a real Prometheus
# (and .ci/run checks the alert rules with its promtool); docker-compose
# validates docker-compose.yml without a Docker daemon. Debian/Ubuntu only.
set -euo pipefail

packages=(cmake libclang-dev g++ chromium fonts-dejavu-core prometheus docker-compose)
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
