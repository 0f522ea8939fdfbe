# Per-thread samples of a `perf record -e cpu-clock -F 499 -g` run, over the training
# steps (from the first to the last sample in the bf16 product kernel), with the leaf
# function and, for kernel samples, the user function that faulted.
import collections,sys
samples=[]; cur=None
for line in open(sys.argv[1]):
    if not line.startswith((' ','\t')) and line.strip():
        parts=line.split()
        cur={'tid':int(parts[0]),'t':float(parts[1].rstrip(':')),'frames':[]}
        samples.append(cur)
    elif line.strip() and cur is not None:
        p=line.strip().split(None,1)
        cur['frames'].append((p[1] if len(p)>1 else p[0]).split('+')[0])
K=('clear_page','folio_zero','vma_alloc','do_huge','__handle','handle_mm','exc_page','asm_exc','do_anon','get_page','__alloc','alloc_pages','[unknown]')
gemm=[s['t'] for s in samples if s['frames'] and 'avx512_blocks' in s['frames'][0]]
lo,hi=min(gemm),max(gemm)
win=[s for s in samples if lo<=s['t']<=hi]
cnt=collections.Counter(s['tid'] for s in win)
main=samples[0]['tid']
print('%s: steps window %.1f s; samples per thread (499 a second each):'%(sys.argv[2],hi-lo), dict(cnt.most_common(4)))
tot=sum(cnt.values()); print('  both cores busy share: %.1f%% (samples / (2 x 499 x window))'%(100*tot/(2*499*(hi-lo))))
def leaf(s):
    f=s['frames'] or ['?']
    user=next((x for x in f if not x.startswith(K) and not x.startswith('0x')), '?')
    return ('page clearing in ' if f[0].startswith('clear_page') else '')+user[:90]
for tid in [main]+[t for t,_ in cnt.most_common(3) if t!=main][:1]:
    c=collections.Counter(leaf(s) for s in win if s['tid']==tid)
    n=sum(c.values()); print('  thread %s (%s): %d samples = %.1f s'%(tid,'main' if tid==main else 'a rayon worker',n,n/499))
    for k,v in c.most_common(12): print('    %5.1f%%  %s'%(100*v/n,k))
