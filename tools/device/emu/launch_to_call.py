# Rewrites the kernel launches of a .cu file for tools/device/emu:
#   kernel<<<grid, block, smem, stream>>>(args);
# becomes
#   emu_launch(dim3(grid), dim3(block), [&] { kernel(args); });
# usage: python3 launch_to_call.py in.cu out.cc
import re, sys, pathlib
src = pathlib.Path(sys.argv[1]).read_text()
# kernel<<<grid, block, smem, stream>>>(args);  ->  emu_launch(grid, block, [&] { kernel(args); });
pat = re.compile(r'([A-Za-z_][\w:]*(?:<[^<>;]*>)?)<<<(.*?)>>>\((.*?)\);', re.S)
def rep(m):
    cfg = m.group(2)
    parts, depth, cur = [], 0, ''
    for ch in cfg:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    parts.append(cur.strip())
    return 'emu_launch(dim3(%s), dim3(%s), [&] { %s(%s); });' % (parts[0], parts[1], m.group(1), m.group(3))
out, n = pat.subn(rep, src)
sys.stderr.write('%s: %d launches\n' % (sys.argv[1], n))
pathlib.Path(sys.argv[2]).write_text(out)
