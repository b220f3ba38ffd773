"""Reads and writes MILBlob files with coremltools' own storage library, for
crates/mil/tests/blob_interop.rs. Text in, text out, one blob per line:

  check                 exit 0 when coremltools' storage library imports
  write FILE < SPEC     SPEC lines "DTYPE V1 V2 ...": writes them in order to FILE,
                        prints each blob's offset
  read FILE < SPEC      SPEC lines "DTYPE OFFSET": prints "V1 V2 ..." per blob

Values are integers; fp16 and fp32 values are their bit patterns, so that every
comparison is exact.
"""

import os
import sys


def storage():
    # coremltools prints warnings about the macOS-only parts it cannot load; they
    # are irrelevant here and would clutter the test output.
    stderr = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            from coremltools import libmilstoragepython
    finally:
        os.dup2(stderr, 2)
    return libmilstoragepython


# dtype -> (writer/reader suffix, numpy element type handed to the binding)
TYPES = {
    "fp16": ("fp16", "uint16"),
    "fp32": ("float", "uint32"),  # bits, viewed as float32 on the way in and out
    "uint8": ("uint8", "uint8"),
    "int8": ("int8", "int8"),
    "int16": ("int16", "int16"),
    "uint16": ("uint16", "uint16"),
    "int32": ("int32", "int32"),
    "uint32": ("uint32", "uint32"),
    "int4": ("int4", "int8"),
    "uint1": ("uint1", "uint8"),
    "uint2": ("uint2", "uint8"),
    "uint3": ("uint3", "uint8"),
    "uint4": ("uint4", "uint8"),
    "uint6": ("uint6", "uint8"),
}


def main():
    import numpy as np

    cmd = sys.argv[1]
    lib = storage()
    if cmd == "check":
        import coremltools

        print(coremltools.__version__)
        return
    path = sys.argv[2]
    lines = [l.split() for l in sys.stdin.read().splitlines() if l.strip()]
    if cmd == "write":
        writer = lib._BlobStorageWriter(path)
        for dtype, *values in lines:
            suffix, np_type = TYPES[dtype]
            arr = np.array([int(v) for v in values], dtype=np_type)
            if dtype == "fp32":
                arr = arr.view(np.float32)
            print(getattr(writer, "write_%s_data" % suffix)(arr))
        del writer  # the file is completed when the writer goes away
    elif cmd == "read":
        reader = lib._BlobStorageReader(path)
        for dtype, offset in lines:
            suffix, _ = TYPES[dtype]
            arr = getattr(reader, "read_%s_data" % suffix)(int(offset))
            if dtype == "fp32":
                arr = np.asarray(arr, dtype=np.float32).view(np.uint32)
            print(" ".join(str(int(v)) for v in arr))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
