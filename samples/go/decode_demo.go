// decode_demo is samples/c/decode_demo.c in Go: a context, a bit plan, a packed KV cache with
// two sequences, and one decode step of attention on it. It makes up the same numbers as the C
// demo and prints the same lines, so the two outputs can be compared with diff.
//
//	go run . [PLAN_FILE]
//
// With a plan file (made by `kvbits calibrate`) the demo uses that model's shape. Without one
// it first calibrates a small 3-bit plan from synthetic activations. Real code would pass
// post-RoPE keys, values and queries from its model where this demo makes up numbers.
package main

import (
	"fmt"
	"os"

	"kvbits.dev/kvbits"
)

// fill writes deterministic made-up activations: rows of headDim values, roughly Gaussian and
// larger in higher dims so that RoPE blocks differ in energy as they do in real models.
func fill(x []float32, headDim uint32, seed *uint32) {
	for i := range x {
		var sum float32
		for j := 0; j < 4; j++ {
			*seed = *seed*1664525 + 1013904223
			sum += float32(*seed>>8) / 16777216.0
		}
		x[i] = (sum - 2.0) * (1.0 + float32(uint32(i)%headDim)*0.25)
	}
}

func calibratePlan(ctx *kvbits.Context) (*kvbits.Plan, error) {
	shape := kvbits.DefaultModelShape() // split-half RoPE, theta 10000
	shape.NLayers, shape.NQHeads, shape.NKVHeads, shape.HeadDim = 2, 4, 2, 64
	const nTokens = 256
	cal, err := kvbits.NewCalibrator(ctx, shape)
	if err != nil {
		return nil, err
	}
	defer cal.Close()
	seed := uint32(1)
	q := make([]float32, nTokens*shape.NQHeads*shape.HeadDim)
	k := make([]float32, nTokens*shape.NKVHeads*shape.HeadDim)
	for layer := uint32(0); layer < shape.NLayers; layer++ {
		fill(q, shape.HeadDim, &seed)
		fill(k, shape.HeadDim, &seed)
		if err := cal.Observe(layer, q, k); err != nil {
			return nil, err
		}
	}
	opts := kvbits.DefaultPlanOptions() // Block-GTQ, 3 key bits on average, 3 value bits
	return cal.BuildPlan(&opts)
}

func run() error {
	// 1. A context: the CPU backend with one worker per core (BackendAuto picks a GPU).
	ctx, err := kvbits.NewContext(&kvbits.ContextParams{Backend: kvbits.BackendCPU})
	if err != nil {
		return err
	}
	defer ctx.Close()

	// 2. A plan: loaded from a file, or calibrated here.
	var plan *kvbits.Plan
	if len(os.Args) > 1 {
		plan, err = kvbits.LoadPlanFile(os.Args[1])
	} else {
		plan, err = calibratePlan(ctx)
	}
	if err != nil {
		return err
	}
	defer plan.Close()
	if err := ctx.PlanSupported(plan); err != nil {
		return err
	}
	info, err := plan.Info()
	if err != nil {
		return err
	}
	fmt.Printf("plan: %d layers, %d query heads, %d KV heads, head_dim %d; %.2f key bits, %d value bits\n",
		info.NLayers, info.NQHeads, info.NKVHeads, info.HeadDim, info.KAvgBits, info.VBits)
	fmt.Printf("      %.1f bytes per token per KV head (fp16: %d)\n", info.BytesPerTokenPerHead, 4*info.HeadDim)

	// 3. A cache: a pool of 64 pages of 16 tokens, and two sequences.
	params := kvbits.DefaultCacheParams()
	params.PageSize, params.MaxPages = 16, 64
	cache, err := kvbits.NewCache(ctx, plan, params)
	if err != nil {
		return err
	}
	defer cache.Close()
	seqs := make([]uint64, 2)
	for i := range seqs {
		if seqs[i], err = cache.AddSequence(); err != nil {
			return err
		}
	}

	kvRow := info.NKVHeads * info.HeadDim // floats per token in k and v
	qRow := info.NQHeads * info.HeadDim   // floats per token in q and out
	prompt, one := []uint32{20, 7}, []uint32{1, 1}
	seed := uint32(7)

	// 4. The prompts: 20 and 7 tokens, every layer, both sequences in one call per layer.
	k := make([]float32, (prompt[0]+prompt[1])*kvRow)
	v := make([]float32, (prompt[0]+prompt[1])*kvRow)
	for layer := uint32(0); layer < info.NLayers; layer++ {
		fill(k, info.HeadDim, &seed)
		fill(v, info.HeadDim, &seed)
		if err := cache.Append(layer, seqs, prompt, k, v); err != nil {
			return err
		}
	}

	// 5. One decode step: append each sequence's new token, then attend with its query.
	k, v = k[:2*kvRow], v[:2*kvRow]
	q := make([]float32, 2*qRow)
	out := make([]float32, 2*qRow)
	lse := make([]float32, 2*info.NQHeads)
	for layer := uint32(0); layer < info.NLayers; layer++ {
		fill(k, info.HeadDim, &seed)
		fill(v, info.HeadDim, &seed)
		fill(q, info.HeadDim, &seed)
		if err := cache.Append(layer, seqs, one, k, v); err != nil {
			return err
		}
		if err := cache.Decode(layer, seqs, q, out, lse, nil); err != nil {
			return err
		}
		for i := uint32(0); i < 2; i++ {
			o := out[i*qRow:]
			fmt.Printf("layer %d, sequence %d: out[head 0] = %+.4f %+.4f %+.4f %+.4f ..., lse %.4f\n",
				layer, i, o[0], o[1], o[2], o[3], lse[i*info.NQHeads])
		}
	}

	// 6. What the cache holds and what it costs.
	stats, err := cache.Stats()
	if err != nil {
		return err
	}
	fmt.Printf("cache: %d sequences, %d tokens, %d of %d pages used\n",
		stats.Sequences, stats.Tokens, stats.PagesUsed, stats.PagesTotal)
	// Pages are taken whole: a page that is partly filled still counts in full.
	fmt.Printf("bytes used: %d in pages of %d tokens + %d fp16 sink/window (the same tokens in fp16: %d)\n",
		stats.PackedBytesUsed, stats.PageSize, stats.FP16RegionBytes,
		stats.Tokens*uint64(info.NLayers)*4*uint64(kvRow))
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "decode_demo:", err)
		os.Exit(1)
	}
}
