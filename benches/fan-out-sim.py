#!/usr/bin/env python3
"""Models the time to copy one file from a client to N hosts: star, chain, trees and doubling.

Usage:
    benches/fan-out-sim.py                     # the table for the defaults (docs/fan-out.md)
    benches/fan-out-sim.py --host-up-gbps 10 --host-down-gbps 10
    benches/fan-out-sim.py --hosts 64,256 --widths 2,3 --chunk-mib 16
    benches/fan-out-sim.py --check             # assert the model's properties and run a small table

Prints a Markdown table of minutes per scheme against the number of hosts. Links are full
duplex, disks are faster than links, every host is alike, and a shared uplink is split evenly
between the transfers using it. Sizes are decimal (GB, Gb/s) except chunks (MiB).

- star: what xfer does. The client sends to every host itself, `--hosts-at-once` at a time; the
  hosts of a wave share the client's uplink, each at most its downlink. Every wave pays one
  connection setup. With identical hosts, waves and "next host as a slot frees" take the same time.
- chain: client -> h1 -> h2 -> ... -> hN, pipelined in chunks.
- tree k: the client feeds one root host at its full uplink; every host relays to up to k
  children, its uplink shared between them. A chain is the tree with k = 1.
- doubling: no pipelining; each round every holder (the client included) sends the whole file
  to one new host, so the holders double. What copying onward with scp would give.
- bound: no scheme beats max(S / min(client uplink, host downlink), N S / (client uplink + N host
  uplink)); the second term matters only when host uplinks are slow.

Chains and trees are simulated chunk by chunk along the path to the deepest host: a hop forwards
a chunk once all of it has arrived, spends chunk / rate sending it, and it arrives half a round
trip later. The client opens a control session to every host, `--connects-at-once` at a time,
in breadth-first order, each taking `--setup` seconds; a relayed host then needs one more
setup for its relay's connection before it can receive.
"""

import argparse
import math
import sys

GIGA = 1e9
MEBI = 1 << 20


def byte_rate(gigabits):
    return gigabits * GIGA / 8


def chunk_sizes(params):
    whole, rest = divmod(params.size, params.chunk)
    return [params.chunk] * int(whole) + ([rest] if rest else [])


def star(params, hosts):
    total = 0.0
    remaining = hosts
    while remaining > 0:
        wave = min(params.hosts_at_once, remaining)
        rate = min(params.host_down, params.client_up / wave)
        total += params.setup + params.latency + params.size / rate
        remaining -= wave
    return total


def levels(hosts, width):
    """Hosts per level below the client: 1 root, then up to `width` times the level above."""
    counts, placed, level = [], 0, 1
    while placed < hosts:
        counts.append(min(level, hosts - placed))
        placed += counts[-1]
        level *= width
    return counts


def pipeline(params, rates, ready):
    """When the last chunk reaches the end of a path whose hop i sends at rates[i] bytes/s and
    whose receiver i can take data from time ready[i]."""
    sizes = chunk_sizes(params)
    arrivals = [0.0] * len(sizes)  # every chunk is at the client from the start
    for rate, start in zip(rates, ready):
        sender_free = start
        for index, size in enumerate(sizes):
            begin = max(sender_free, arrivals[index])
            sender_free = begin + size / rate
            arrivals[index] = sender_free + params.latency
    return arrivals[-1]


def tree(params, hosts, width):
    counts = levels(hosts, width)
    rates = [min(params.client_up, params.host_down)]
    for above, below in zip(counts, counts[1:]):
        children = math.ceil(below / above)  # the busiest sender of that level
        rates.append(min(params.host_up / children, params.host_down))
    ready, last_index = [], 0
    for depth, count in enumerate(counts):
        last_index += count
        relay_setup = params.setup if depth > 0 else 0.0
        ready.append(math.ceil(last_index / params.connects_at_once) * params.setup + relay_setup)
    return pipeline(params, rates, ready)


def chain(params, hosts):
    return tree(params, hosts, 1)


def doubling(params, hosts):
    rounds = math.ceil(math.log2(hosts + 1))
    first = params.size / min(params.client_up, params.host_down)
    later = params.size / min(params.client_up, params.host_up, params.host_down)
    return rounds * (params.setup + params.latency) + first + (rounds - 1) * later


def bound(params, hosts):
    return max(params.size / min(params.client_up, params.host_down),
               hosts * params.size / (params.client_up + hosts * params.host_up))


def minutes(seconds):
    return f"{seconds / 60:.2f}" if seconds < 600 else f"{seconds / 60:.1f}"


def table(params):
    widths = params.widths
    header = ["N", f"star (K={params.hosts_at_once})", "chain"]
    header += [f"tree k={width}" for width in widths] + ["doubling", "bound"]
    lines = [
        f"{params.size / GIGA:g} GB; client uplink {params.client_gbps:g} Gb/s; hosts "
        f"{params.host_up_gbps:g} Gb/s up, {params.host_down_gbps:g} Gb/s down; "
        f"chunks of {params.chunk_mib:g} MiB;\n{params.setup:g} s per connection, "
        f"{params.connects_at_once} opened at once; {params.rtt_ms:g} ms round trip. Minutes.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---:|" * len(header),
    ]
    for hosts in params.hosts:
        times = [star(params, hosts), chain(params, hosts)]
        times += [tree(params, hosts, width) for width in widths]
        times += [doubling(params, hosts), bound(params, hosts)]
        lines.append(f"| {hosts} | " + " | ".join(minutes(seconds) for seconds in times) + " |")
    return "\n".join(lines)


def close(actual, expected, tolerance):
    return abs(actual - expected) <= tolerance * expected


def check(params):
    """Asserts properties the model must have; checks that need a regime run only in it."""
    passed = []

    def expect(name, condition):
        assert condition, name
        passed.append(name)

    size, chunk, latency, setup = params.size, params.chunk, params.latency, params.setup
    up, down, client = params.host_up, params.host_down, params.client_up
    at_once = params.hosts_at_once
    per_connection = setup + latency

    def variant(**changes):
        return argparse.Namespace(**{**vars(params), **changes})

    # One hop, one chunk: exactly setup, send time and half a round trip.
    expect("one hop, one chunk", close(pipeline(variant(size=chunk), [client], [setup]),
                                       setup + chunk / client + latency, 1e-12))
    # Equal chunks, no setup: the flow-shop formula, sum of hop times + (M - 1) x slowest hop.
    rates = [client, up, up / 2, up]
    formula = sum(chunk / rate for rate in rates) + 39 * chunk / min(rates) + 4 * latency
    expect("pipeline = flow-shop formula",
           close(pipeline(variant(size=40 * chunk), rates, [0.0] * 4), formula, 1e-9))
    # Star, uplink the bottleneck: N S / U plus one setup per wave, so linear in N.
    if client / at_once < down:
        for hosts in (8, 16, 64, 256):
            waves = math.ceil(hosts / at_once)
            expect(f"star {hosts} = N S / U", close(
                star(params, hosts), hosts * size / client + waves * per_connection, 1e-9))
        expect("star doubles with N", close(star(params, 512) / star(params, 256), 2, 0.01))
    # Star with a fast client: hosts-at-once times the host downlink is the limit.
    waves = math.ceil(64 / at_once)
    expect("star limited by K x D", close(star(variant(client_up=at_once * down * 10), 64),
                                          waves * (size / down + per_connection), 1e-9))
    # Chain and trees with setup left out: S over the slowest hop, plus one chunk per hop.
    instant = variant(setup=0.0)
    relay = min(up, down)
    if relay >= min(client, down):
        for hosts in (8, 64, 256):
            estimate = size / min(client, down) + hosts * (chunk / relay + latency)
            expect(f"chain {hosts} ~ S/min(U,D) + N C/r",
                   close(chain(instant, hosts), estimate, 0.02))
    if up / 4 < min(client, down):  # a host's uplink / 4 is the slowest hop: S k / uplink
        for hosts in (64, 256):
            depth = len(levels(hosts, 4))
            estimate = size * 4 / up + depth * (chunk * 4 / up + latency)
            expect(f"tree k=4 {hosts} ~ S k/up + depth C k/up",
                   close(tree(instant, hosts, 4), estimate, 0.02))
    # Setup delays a relay scheme by at most the time its last host is ready.
    for hosts in (64, 256):
        last_ready = (math.ceil(hosts / params.connects_at_once) + 1) * setup
        for width in (1, 2, 4):
            without, with_setup = tree(instant, hosts, width), tree(params, hosts, width)
            expect(f"setup costs <= last ready, {hosts} k={width}",
                   without <= with_setup <= without + last_ready)
    # Tree time grows with depth only: 256 hosts take little longer than 8.
    expect("tree k=2 nearly flat in N", tree(instant, 256, 2) < 1.1 * tree(instant, 8, 2))
    # Doubling: ceil(log2(N + 1)) rounds of a whole file each; 255 hosts take 8.
    first, later = size / min(client, down), size / min(client, up, down)
    expect("doubling 255 = 8 rounds",
           close(doubling(params, 255), 8 * per_connection + first + 7 * later, 1e-9))
    # No scheme beats the bound, and none gets faster with more hosts.
    for hosts in params.hosts:
        times = [star(params, hosts), chain(params, hosts), doubling(params, hosts)]
        times += [tree(params, hosts, width) for width in params.widths]
        expect(f"all >= bound at {hosts}", min(times) >= bound(params, hosts))
    for scheme in (star, chain, doubling):
        series = [scheme(params, hosts) for hosts in params.hosts]
        expect(f"{scheme.__name__} non-decreasing", series == sorted(series))
    return passed


def number_list(text):
    return [int(item) for item in text.split(",") if item]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=100, help="file size, GB (100)")
    parser.add_argument("--client-gbps", type=float, default=10, help="client uplink, Gb/s (10)")
    parser.add_argument("--host-up-gbps", type=float, default=25, help="host uplink, Gb/s (25)")
    parser.add_argument("--host-down-gbps", type=float, default=25,
                        help="host downlink, Gb/s (25)")
    parser.add_argument("--hosts-at-once", type=int, default=8, help="star: hosts at a time (8)")
    parser.add_argument("--connects-at-once", type=int, default=32,
                        help="relays: control sessions the client opens at a time (32)")
    parser.add_argument("--setup", type=float, default=1.0,
                        help="seconds to open one SSH connection and start the agent (1)")
    parser.add_argument("--rtt-ms", type=float, default=1.0,
                        help="round trip between any two machines, ms (1)")
    parser.add_argument("--chunk-mib", type=float, default=64, help="pipelining unit, MiB (64)")
    parser.add_argument("--widths", type=number_list, default=[2, 4, 16],
                        help="tree widths (2,4,16)")
    parser.add_argument("--hosts", type=number_list, default=[8, 16, 32, 64, 128, 256, 512, 1024],
                        help="host counts (8,16,...,1024)")
    parser.add_argument("--check", action="store_true",
                        help="assert the model's properties on 10 GB, print a small table")
    params = parser.parse_args()
    if params.check:
        params.size_gb, params.hosts = 10, [8, 16, 32, 64, 128, 256]
    params.size = params.size_gb * GIGA
    params.client_up = byte_rate(params.client_gbps)
    params.host_up = byte_rate(params.host_up_gbps)
    params.host_down = byte_rate(params.host_down_gbps)
    params.chunk = params.chunk_mib * MEBI
    params.latency = params.rtt_ms / 1000 / 2
    if params.check:
        passed = check(params)
        print(table(params))
        print(f"\nok: {len(passed)} checks passed", file=sys.stderr)
        return
    print(table(params))


if __name__ == "__main__":
    main()
