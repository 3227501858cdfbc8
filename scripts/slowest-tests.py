#!/usr/bin/env python3
"""Prints the N slowest test cases of the JUnit reports given (scripts/test's integration runs)."""
import sys
import xml.etree.ElementTree as ET

n, paths = int(sys.argv[1]), sys.argv[2:]
cases = []
for i, path in enumerate(paths, 1):
    for case in ET.parse(path).getroot().iter("testcase"):
        cases.append((float(case.get("time", 0)), f"{case.get('classname')}::{case.get('name')}", i))
for seconds, name, run in sorted(cases, reverse=True)[:n]:
    print(f"{seconds:8.2f}s  run {run}  {name}")
print(f"{len(cases)} test cases in {len(paths)} runs")
