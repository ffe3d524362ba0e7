#!/usr/bin/env python3
"""HF transformers baseline for `make gpu-check` (run only on the device machine, where torch and
transformers are installed): the same HF model directory that lmd-bench measures (after lmd-convert),
eager PyTorch, greedy generation of exactly N tokens from P random prompt tokens at each batch size.

Prints CSV on stdout: engine,batch,prompt_tokens,completion_tokens,ttft_ms,tpot_ms,output_tok_s,wall_s
  ttft_ms    time of a generate() of 1 token (the prefill)
  tpot_ms    (wall - ttft) / (N - 1)
  output_tok_s  batch * N / wall
With --mem, two more columns: weights_mib (torch.cuda.memory_allocated after loading) and max_mem_mib
(torch.cuda.max_memory_allocated over the batch's runs; the seeds' HF figure).
"""
import argparse
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def sync_time():
    torch.cuda.synchronize()
    return time.perf_counter()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--completion", type=int, default=128)
    ap.add_argument("--mem", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float16).cuda().eval()
    print(f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    weights_mib = torch.cuda.memory_allocated() / 2**20
    print("engine,batch,prompt_tokens,completion_tokens,ttft_ms,tpot_ms,output_tok_s,wall_s" +
          (",weights_mib,max_mem_mib" if a.mem else ""))
    for b in [int(x) for x in a.batch.split(",")]:
        ids = torch.randint(3, vocab, (b, a.prompt), generator=g).cuda()
        mask = torch.ones_like(ids)
        torch.cuda.reset_peak_memory_stats()
        kw = dict(attention_mask=mask, do_sample=False, pad_token_id=0, eos_token_id=None)
        with torch.no_grad():
            model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)  # warm-up
            t = sync_time()
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
            ttft = sync_time() - t
            t = sync_time()
            out = model.generate(ids, max_new_tokens=a.completion, min_new_tokens=a.completion, **kw)
            wall = sync_time() - t
        n = out.shape[1] - a.prompt
        print(f"hf-transformers-eager,{b},{a.prompt},{n},{ttft * 1e3:.2f},{(wall - ttft) / max(n - 1, 1) * 1e3:.3f},"
              f"{b * n / wall:.1f},{wall:.3f}" +
              (f",{weights_mib:.0f},{torch.cuda.max_memory_allocated() / 2**20:.0f}" if a.mem else ""), flush=True)


if __name__ == "__main__":
    main()
