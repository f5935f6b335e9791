#!/bin/bash
# kola: { "exclusive": false, "description": "its config.ign is merged into the shared machines' config" }
set -xeuo pipefail
grep -qx 'configured by Ignition' /etc/bogie-demo.conf
echo "ok: config.ign applied"
