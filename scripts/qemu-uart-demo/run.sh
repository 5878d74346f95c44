#!/usr/bin/env bash
# A firmware under QEMU talks to eswifi-emu over its UART: eswifi-emu serves the line with
# --listen, QEMU connects its USART1 to it with -serial tcp:HOST:PORT, and the firmware's console
# (USART2) shows the module's reply to I?; the firmware then ends QEMU (exit status 0).
#
# QEMU drops what a UART receives before the firmware has enabled it, so the power-up banner the
# module writes when QEMU connects would arrive cut at a random place. This script reads the
# banner away first with a connection of its own (as a host that was attached at power-up would
# have), so the console shows the same bytes every run.
#
# Needs: qemu-system-arm (netduinoplus2 machine) and binutils-arm-none-eabi (Debian packages), and
# a built emulator ($ESWIFI_EMU, else target/release/eswifi-emu: cargo build --release). Run from
# the repository root:
#   scripts/qemu-uart-demo/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
emu_bin=${ESWIFI_EMU:-target/release/eswifi-emu}
work=$(mktemp -d)
emu=
trap '[ -n "$emu" ] && kill "$emu" 2>/dev/null; rm -rf "$work"' EXIT

arm-none-eabi-as -o "$work/fw.o" "$here/fw.s"
arm-none-eabi-ld -T "$here/fw.ld" -o "$work/fw.elf" "$work/fw.o"
arm-none-eabi-objcopy -O binary "$work/fw.elf" "$work/fw.bin"

"$emu_bin" -q --listen 127.0.0.1:0 --certsets "$work/certs" > "$work/addr" &
emu=$!
for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(head -n 1 "$work/addr")
# The power-up output, up to its prompt, on a connection of our own (bounded: 5 s).
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
read -r -d '>' -t 5 <&3 || { echo "no prompt from eswifi-emu at $addr" >&2; exit 1; }
exec 3<&-
echo "eswifi-emu serves the UART at $addr; QEMU's console (USART2) follows:"
# The firmware ends QEMU itself once the reply is in; the timeout only bounds a hang.
timeout 10 qemu-system-arm -M netduinoplus2 -nographic -monitor none \
    -semihosting-config enable=on,target=native \
    -kernel "$work/fw.bin" -serial "tcp:$addr" -serial stdio
echo
