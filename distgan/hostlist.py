"""Slurm host lists (``node[01-03,07],gpu5``) as host names.

    expand_hostlist("node[01-03,07],login")   # ["node01", "node02", "node03", "node07", "login"]

A leaf module: the launchers (:mod:`distgan.launch.env`, which derives the rendezvous
address of a job) and the rendezvous (:mod:`distgan.rendezvous`, which names the host a
missing rank was expected on) both read host lists, and neither imports the other for it.
"""
from __future__ import annotations

import re
import subprocess


def expand_hostlist(nodelist: str) -> list[str]:
    """Expand a Slurm host list (``node[01-03,07],gpu5``) into host names.

    Uses ``scontrol show hostnames`` when available (it knows every corner of
    the syntax); falls back to a parser for the common ``prefix[a-b,c]`` form.
    """
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist):
        prefix, ranges = m.group(1), m.group(2)
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(prefix + lo)
                continue
            for i in range(int(lo), int(hi) + 1):
                hosts.append(prefix + str(i).zfill(len(lo)))
    return hosts
