#!/usr/bin/env python3
"""Removes superseded test and example executables from a reused cargo target directory.

Cargo keeps every build of a test binary it has made (each under its own hash), so a target
directory that outlives the clone grows by a few gigabytes a day until the disk is full. Of each
executable name in `<target>/<profile>/deps` and `<target>/<profile>/examples`, the newest file
is kept, and so is every file written in the last day: two current binaries can share a name
(the facade's tests and the command-line tool are both `statewright`), and one removed by
mistake is only linked again. Libraries (`.rlib`, `.rmeta`, `.so`), build-script outputs and
the incremental cache are left alone, so nothing native (RocksDB) is rebuilt.
"""
import os
import sys
import time
from collections import defaultdict

KEEP_SECONDS = 24 * 3600


def prune(directory):
    groups = defaultdict(list)
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        path = os.path.join(directory, name)
        if "." in name or "-" not in name:
            continue
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        groups[name.rsplit("-", 1)[0]].append((os.path.getmtime(path), path))
    freed = 0
    cutoff = time.time() - KEEP_SECONDS
    for builds in groups.values():
        builds.sort()
        for mtime, path in builds[:-1]:
            if mtime >= cutoff:
                continue
            try:
                size = os.path.getsize(path)
                os.remove(path)
                freed += size
            except OSError:
                pass
    return freed


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "target"
    freed = 0
    for profile in ("debug", "release"):
        for sub in ("deps", "examples"):
            freed += prune(os.path.join(target, profile, sub))
    print(f"pruned {freed / 1e9:.1f} GB of superseded executables from {target}")


if __name__ == "__main__":
    main()
