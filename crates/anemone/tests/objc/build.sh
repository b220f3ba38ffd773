#!/usr/bin/env bash
# Builds the fake AppleNeuralEngine framework and the libobjc shim that
# crates/anemone/tests/objc_gnustep.rs runs the backend's Objective-C layer against, with
# GCC's Objective-C compiler (Debian: gobjc) and GNUstep Base (libgnustep-base-dev).
#
# Usage: build.sh OUT_DIR   (scripts/install-test-deps.sh passes <workspace>/target/objc-fake)
#
# Writes into OUT_DIR:
#   libfake_ane.so   fake_ane.m: the _ANE* classes, IOSurface functions and keys, CFRelease,
#                    and the fake_ane_* counters and switches the test reads with dlsym;
#   libobjc_shim.so  objc_shim.m + msgsend_x86_64.S: GCC's libobjc with objc_msgSend and
#                    objc_autoreleasePoolPush/Pop added, GNUstep Base initialised on load;
#   objc_libs        the ANEMONE_OBJC_LIBS value that points the backend's loader at them
#                    (and at GNUstep Base as Foundation).
# Everything is rebuilt on each run (a few seconds), so the output always matches the
# sources. x86-64 Linux only: the msgSend trampoline is x86-64 assembly.
set -euo pipefail

out="${1:?usage: build.sh OUT_DIR}"
src="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# gnustep-config's flags, minus dependency-file generation.
objc_flags=()
for f in $(gnustep-config --objc-flags); do
    case "$f" in -MMD | -MP) ;; *) objc_flags+=("$f") ;; esac
done
read -r -a base_libs <<<"$(gnustep-config --base-libs)"

gcc "${objc_flags[@]}" -std=gnu11 -shared -fPIC -Wl,-z,defs \
    -o "$out/libfake_ane.so" "$src/fake_ane.m" "${base_libs[@]}"
gcc "${objc_flags[@]}" -std=gnu11 -shared -fPIC -Wl,-z,defs \
    -o "$out/libobjc_shim.so" "$src/objc_shim.m" "$src/msgsend_x86_64.S" "${base_libs[@]}"

# The exact Foundation file that the shim was linked against.
base="$(ldd "$out/libobjc_shim.so" | awk '$1 ~ /^libgnustep-base\.so/ { print $3 }')"
if [[ -z "$base" || "$base" != /* ]]; then
    echo "error: cannot find the libgnustep-base the shim links" >&2
    exit 1
fi
printf '%s\n' "AppleNeuralEngine=$out/libfake_ane.so:objc=$out/libobjc_shim.so:Foundation=$base:CoreFoundation=$out/libfake_ane.so:IOSurface=$out/libfake_ane.so" \
    >"$out/objc_libs"
echo "built the fake AppleNeuralEngine and the libobjc shim in $out"
