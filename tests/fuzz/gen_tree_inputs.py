#!/usr/bin/env python3
"""Writes tree-target inputs (tests/fuzz/tree.cc format: tree blobs separated by
NUL, "#N" = id of blob N) for the hostile shapes of issue 9 § 2:

  dag LEVELS       a DAG of shared subtrees: LEVELS blobs, each a directory
                   holding two names for the next one: 2^(LEVELS-1) paths
                   (the DAG bomb is LEVELS=41, 25 KiB in the repository)
  deep DEPTH       DEPTH directories nested in a chain

usage: gen_tree_inputs.py dag 41 > input   |   gen_tree_inputs.py deep 50000 > input
"""
import sys

ATTRS = '"mode":493,"uid":0,"gid":0,"mtime":0,"ctime":0'


def dag(levels):
    blobs = []
    for k in range(levels - 1):
        blobs.append('{"nodes":[{"name":"a","type":"dir",%s,"subtree":"#%d"},'
                     '{"name":"b","type":"dir",%s,"subtree":"#%d"}]}' % (ATTRS, k + 1, ATTRS, k + 1))
    blobs.append('{"nodes":[{"name":"f","type":"file",%s,"size":0,"content":[]}]}' % ATTRS)
    return "\0".join(blobs)


def deep(depth):
    blobs = ['{"nodes":[{"name":"d","type":"dir",%s,"subtree":"#%d"}]}' % (ATTRS, k + 1) for k in range(depth - 1)]
    blobs.append('{"nodes":[]}')
    return "\0".join(blobs)


if __name__ == "__main__":
    kind, n = sys.argv[1], int(sys.argv[2])
    sys.stdout.write({"dag": dag, "deep": deep}[kind](n))
