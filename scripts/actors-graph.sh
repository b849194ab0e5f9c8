#!/usr/bin/env bash
# Which files of actors/ call which: for each actors/*.c object of a build,
# the other actors/*.c that define the functions (and data) it uses, from
# nm's defined and undefined symbols. Prints the edges, the files that call
# no other actor file (the low modules), and fails if the graph has a
# cycle.  usage: scripts/actors-graph.sh [build-dir]   (default: build)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$root/build}
objdir=$dir/CMakeFiles/parley_actors.dir/actors
[ -d "$objdir" ] || { echo "no objects in $objdir: build first" >&2; exit 2; }
python3 - "$objdir" <<'PY'
import os, subprocess, sys
objdir = sys.argv[1]
objs = sorted(f for f in os.listdir(objdir) if f.endswith('.c.o'))
defs, uses = {}, {}
for o in objs:
    name = o[:-2]
    out = subprocess.run(['nm', os.path.join(objdir, o)], capture_output=True,
                         text=True, check=True).stdout
    d, u = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == 'U':
            u.add(parts[1])
        elif len(parts) == 3 and parts[1] in 'TDBR':
            d.add(parts[2])
    defs[name], uses[name] = d, u
owner = {s: f for f, d in defs.items() for s in d}
edges = {f: sorted({owner[s] for s in uses[f] if s in owner and owner[s] != f})
         for f in defs}
for f in sorted(edges):
    print(f"{f:16} -> {' '.join(edges[f]) or '(none)'}")
print('low (call no other actor file):',
      ' '.join(f for f in sorted(edges) if not edges[f]))
# cycles: depth-first search, report each back edge's cycle
state, stack, cycles = {}, [], []
def dfs(f):
    state[f] = 1; stack.append(f)
    for g in edges[f]:
        if state.get(g) == 1:
            cycles.append(stack[stack.index(g):] + [g])
        elif g not in state:
            dfs(g)
    stack.pop(); state[f] = 2
for f in sorted(edges):
    if f not in state:
        dfs(f)
if cycles:
    for c in cycles:
        print('CYCLE:', ' -> '.join(c))
    sys.exit(1)
print('acyclic: no circle of calls between actor files')
PY
