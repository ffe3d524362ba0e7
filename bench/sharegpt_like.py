#!/usr/bin/env python3
"""A ShareGPT-like length mix for lmd-bench serve --dataset: CSV prompt,output_len on stdout.

    bench/sharegpt_like.py [N] [SEED]      (default 1000 prompts, seed 0)

No ShareGPT file travels to a GPU machine, so this draws lengths with ShareGPT's shape after vLLM's filtering
(prompt and output of at least 4 tokens, prompt at most 1024, prompt + output at most 2048): log-normal, heavy
tailed, prompts of median about 90 and mean about 155 tokens, outputs of median about 120 and mean about 185.
A prompt is that many tokens' worth of plain English words (about 1.3 tokens a word for Llama's tokenizer);
lmd-bench serve counts the real tokens through the server."""
import csv, math, random, sys

WORDS = ("the of and to in is was that for on with as by at from his her they this which be or had not are "
         "but one all were we when there can an your more their said would what so up out if about who them "
         "time will some into has two like other then could these may first water been call people now find "
         "long down day did get come made part over new sound take only little work know place year live back "
         "give most very after thing our just name good sentence man think say great where help through much "
         "before line right too mean old any same tell boy follow came want show also around form three small "
         "set put end does another well large must big even such because turn here why ask went men read need "
         "land different home us move try kind hand picture again change off play spell air away animal house "
         "point page letter mother answer found study still learn should world high every near add food between "
         "own below country plant last school father keep tree never start city earth eye light thought head "
         "under story saw left few while along might close something seem next hard open example begin life "
         "always those both paper together got group often run important until children side feet car mile night "
         "walk white sea began grow took river four carry state once book hear stop without second later miss "
         "idea enough eat face watch far really almost let above girl sometimes mountain cut young talk soon list "
         "song being leave family").split()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["prompt", "output_len"])
    made = 0
    while made < n:
        p = int(math.exp(rng.gauss(math.log(90), 1.3)))
        o = int(math.exp(rng.gauss(math.log(120), 1.0)))
        if p < 4 or o < 4 or p > 1024 or p + o > 2048:  # vLLM's ShareGPT filter
            continue
        words = max(1, round(p / 1.3))
        w.writerow([" ".join(rng.choice(WORDS) for _ in range(words)), o])
        made += 1


if __name__ == "__main__":
    main()
