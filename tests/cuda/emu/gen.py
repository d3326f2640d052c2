# Turns the CUDA kernels into plain C++ for the CPU emulation (see run.sh): launches become emu_launch calls,
# the MUFU asm becomes libm. Usage: gen.py <kernels/cuda dir> <output dir>
import re, sys, os
src = sys.argv[1].rstrip('/') + '/'
out = sys.argv[2].rstrip('/') + '/'
dm = open(src + 'device_math.cuh').read()
dm = dm.replace('asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));', 'r = std::exp2(x); if (std::fabs(r) < 1.17549435e-38f) r = 0.0f;')
dm = dm.replace('asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));', 'r = std::log2(x);')
# cp.async (global -> shared, completes by cp_async_wait_all) becomes an immediate copy; commit/wait are no-ops.
dm = re.sub(r'(void cp_async_f32\(float\* dst_smem, const float\* src, bool valid\) \{).*?\n\}',
            r'\1\n    *dst_smem = valid ? *src : 0.0f;\n}', dm, flags=re.S)
dm = re.sub(r'(void cp_async_16\(void\* dst_smem, const void\* src, bool valid\) \{).*?\n\}',
            r'\1\n    if (valid) std::memcpy(dst_smem, src, 16); else std::memset(dst_smem, 0, 16);\n}', dm, flags=re.S)
dm = re.sub(r'(void cp_async_8\(void\* dst_smem, const void\* src, bool valid\) \{).*?\n\}',
            r'\1\n    if (valid) std::memcpy(dst_smem, src, 8); else std::memset(dst_smem, 0, 8);\n}', dm, flags=re.S)
dm = re.sub(r'asm volatile\("cp\.async\.(commit_group|wait_all);\\n" ::: "memory"\);', '', dm)
dm = dm.replace('asm volatile("cp.async.wait_group %0;\\n" ::"n"(kPending) : "memory");', '')
# PDL's wait and trigger and the L2 prefetch: no-ops (the emulation runs one kernel at a time).
dm = re.sub(r'(void grid_dependency_wait\(\) \{).*?\n\}', r'\1\n}', dm, flags=re.S)
dm = re.sub(r'(void grid_launch_dependents\(\) \{).*?\n\}', r'\1\n}', dm, flags=re.S)
dm = re.sub(r'(void prefetch_l2\(const void\* p, unsigned bytes\) \{).*?\n\}', r'\1\n}', dm, flags=re.S)
dm, k = re.subn(r'(const T\* after_wait\(const T\* p\) \{).*?\n\}', r'\1\n    return p;\n}', dm, flags=re.S)
assert k == 1, 'after_wait'
# Named barriers, mbarriers and bulk copies (the ring decode kernel): emu.h's emulations (a bulk copy is a
# memcpy that completes its transaction bytes at once).
for fn, body in [
        (r'void named_barrier_sync\(int id, int threads\) \{', 'emu_bar_sync(id, threads);'),
        (r'unsigned smem_addr\(const void\* p\) \{', '(void)p;\n    return 0u;'),
        (r'void mbar_init\(unsigned long long\* bar, unsigned count\) \{', 'emu_mbar_init(bar, count);'),
        (r'void mbar_init_fence\(\) \{', ''),
        (r'void mbar_arrive\(unsigned long long\* bar\) \{', 'emu_mbar_arrive(bar, 0);'),
        (r'void mbar_arrive_expect_tx\(unsigned long long\* bar, unsigned bytes\) \{', 'emu_mbar_arrive(bar, bytes);'),
        (r'bool mbar_try_wait\(unsigned long long\* bar, unsigned parity\) \{', 'return emu_mbar_try_wait(bar, parity);'),
        (r'void bulk_copy_to_shared\(void\* dst, const void\* src, unsigned bytes,\s*unsigned long long\* bar\) \{',
         'std::memcpy(dst, src, bytes);\n    emu_mbar_complete_tx(bar, bytes);')]:
    dm, k = re.subn('(' + fn + r').*?\n\}', lambda m: m.group(1) + '\n    ' + body + '\n}', dm, flags=re.S)
    assert k == 1, fn
assert 'asm' not in dm, [l for l in dm.splitlines() if 'asm' in l]
open(out + 'device_math_emu.h', 'w').write('#include "emu.h"\n' + dm)
for name in ['scan_mamba1', 'scan_mamba1_tp', 'scan_mamba2', 'scan_mamba2_ssd', 'conv1d_silu', 'rmsnorm', 'gemv', 'decode_mamba1', 'argmax', 'greedy_run', 'l2_prefetch']:
    s = open(src + name + '.cu').read()
    s = s.replace('#include "cuda/device_math.cuh"', '#include "device_math_emu.h"')
    s = s.replace('#include <mma.h>', '#include "wmma_emu.h"')  # tensor-core fragments (wmma_emu.h)
    s = '#define MAMBASCOPE_EMU 1\n' + s  # kernels' inline PTX (e.g. shared-memory fragment loads) has an emulated path
    # the emulated device_math first: shared device headers (gemv_row.cuh, conv_step.cuh, …) skip their own
    # include of it under MAMBASCOPE_EMU, whatever the order of a .cu file's includes
    s = '#include "device_math_emu.h"\n' + s
    s = s.replace('extern __shared__ __align__(16) float smem[];', 'float* smem = emu_smem;')
    # a comment that mentions a launch (kernel<<<…>>>(…)) would be taken for one below: blank such comments
    s = re.sub(r'//[^\n]*', lambda m: '//' if '<<<' in m.group(0) else m.group(0), s)
    pat = re.compile(r'([A-Za-z_][\w:<>., ]*?)\s*<<<(.*?)>>>\s*\((.*?)\);', re.S)
    n = 0
    def rep(m):
        global n
        n += 1
        return 'emu_launch(emu_cfg(%s), [&] { %s(%s); });' % (m.group(2), m.group(1).strip(), m.group(3))
    s = pat.sub(rep, s)
    print(name, 'launches:', n, file=sys.stderr)
    open(out + name + '_emu.cpp', 'w').write('#include "emu_rt.h"\n#include "emu.h"\n' + s)
