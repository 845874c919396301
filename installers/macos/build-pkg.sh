#!/usr/bin/env bash
# Builds Sealpost.pkg, the macOS installer IT deploys with an MDM, on a Mac
# with the Xcode command line tools:
#
#   npx tauri build --bundles app          # in desktop/app: Sealpost.app
#   cargo build --release -p sealpost-agent-cli
#   installers/macos/build-pkg.sh target/release/bundle/macos/Sealpost.app \
#       target/release/sealpost-agent 0.1.0 [--sign "Developer ID Installer: …"]
#
# The package installs the app in /Applications and the headless agent in
# /usr/local/bin with its LaunchAgent. The IT policy comes separately, from
# a configuration profile (org.sealpost.desktop.mobileconfig).
set -euo pipefail

usage() {
    echo "usage: $0 PATH/TO/Sealpost.app PATH/TO/sealpost-agent VERSION [--sign IDENTITY]" >&2
    exit 64
}

[ $# -ge 3 ] || usage
app=$1
agent=$2
version=$3
shift 3
sign=()
if [ $# -gt 0 ]; then
    if [ "$1" != "--sign" ] || [ $# -ne 2 ]; then
        usage
    fi
    sign=(--sign "$2")
fi
[ -d "$app" ] || { echo "$app is not an app bundle" >&2; exit 66; }
[ -x "$agent" ] || { echo "$agent is not an executable" >&2; exit 66; }

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/app-root" "$work/agent-root/usr/local/bin" "$work/agent-root/Library/LaunchAgents"
cp -R "$app" "$work/app-root/"
cp "$agent" "$work/agent-root/usr/local/bin/sealpost-agent"
cp "$here/org.sealpost.agent.plist" "$work/agent-root/Library/LaunchAgents/"

pkgbuild --root "$work/app-root" --install-location /Applications \
    --identifier org.sealpost.desktop.app --version "$version" \
    "$work/Sealpost-app.pkg"
pkgbuild --root "$work/agent-root" --install-location / \
    --identifier org.sealpost.desktop.agent --version "$version" \
    --scripts "$here/scripts" \
    "$work/Sealpost-agent.pkg"
productbuild --distribution "$here/distribution.xml" --package-path "$work" \
    --version "$version" "${sign[@]}" "Sealpost-$version.pkg"
echo "built Sealpost-$version.pkg"
