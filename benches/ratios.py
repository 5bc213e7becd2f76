#!/usr/bin/env python3
"""Adds a "÷ best peer" column to every markdown table of a benchmark report.

Reads the report on stdin and writes it to stdout. In every table with a `tool` column and a
`seconds` column, each row gets its time divided by the best time of the peers (the tools whose
name does not start with "xfer") in the same group: rows that agree on every column before
`tool` (the dataset, say). A cell such as "3.61 (3.47-4.80)" counts as its first number. Rows
without a number, and groups without a peer, get "-". A second column does the same for
`wire MiB` when the table has it.
"""

import re
import sys

NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)")


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def number(cell):
    match = NUMBER.match(cell)
    return float(match.group(1)) if match else None


def ratio_column(rows, column, group_columns, tool_column):
    best = {}
    for row in rows:
        if len(row) <= column or row[tool_column].startswith("xfer"):
            continue
        value = number(row[column])
        key = tuple(row[i] for i in group_columns)
        if value is not None and value > 0:
            best[key] = min(best.get(key, value), value)
    out = []
    for row in rows:
        key = tuple(row[i] for i in group_columns)
        value = number(row[column]) if len(row) > column else None
        if value is None or key not in best:
            out.append("-")
        else:
            out.append(f"{value / best[key]:.2f}x")
    return out


def rewrite(table):
    header = cells(table[0])
    rows = [cells(line) for line in table[2:]]
    if "tool" not in header:
        return table
    tool = header.index("tool")
    columns = [
        (index, name)
        for index, name in enumerate(header)
        if name.startswith("seconds") or name.startswith("wire MiB")
    ]
    if not columns:
        return table
    added = []
    for index, name in columns:
        label = "÷ best peer" if name.startswith("seconds") else "wire ÷ best peer"
        added.append((label, ratio_column(rows, index, range(tool), tool)))
    lines = ["| " + " | ".join(header + [label for label, _ in added]) + " |"]
    lines.append("|" + "---|" * (len(header) + len(added)))
    for position, row in enumerate(rows):
        lines.append("| " + " | ".join(row + [values[position] for _, values in added]) + " |")
    return lines


def main():
    table = []
    for line in sys.stdin.read().splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            print("\n".join(rewrite(table) if len(table) > 2 else table))
            table = []
        print(line)
    if table:
        print("\n".join(rewrite(table) if len(table) > 2 else table))


if __name__ == "__main__":
    main()
