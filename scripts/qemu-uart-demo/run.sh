#!/usr/bin/env bash
# A firmware under QEMU talks to eswifi-emu over its UART: eswifi-emu serves the line with
# --listen, QEMU connects its USART1 to it with -serial tcp:HOST:PORT, and the firmware's console
# (USART2) shows the module's banner and its reply to I?.
#
# Needs: qemu-system-arm (netduinoplus2 machine) and binutils-arm-none-eabi (Debian packages), and
# a built emulator (cargo build --release). Run from the repository root:
#   scripts/qemu-uart-demo/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill "$emu" 2>/dev/null || true; rm -rf "$work"' EXIT

arm-none-eabi-as -o "$work/fw.o" "$here/fw.s"
arm-none-eabi-ld -T "$here/fw.ld" -o "$work/fw.elf" "$work/fw.o"
arm-none-eabi-objcopy -O binary "$work/fw.elf" "$work/fw.bin"

target/release/eswifi-emu --listen 127.0.0.1:0 --certsets "$work/certs" > "$work/addr" &
emu=$!
for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(head -n 1 "$work/addr")
echo "eswifi-emu serves the UART at $addr; QEMU's console (USART2) follows:"
timeout 3 qemu-system-arm -M netduinoplus2 -nographic -monitor none \
    -kernel "$work/fw.bin" -serial "tcp:$addr" -serial stdio || true
echo
