// Command kvbits-crosslang runs the cross-language fixture (bindings/crosslang) through the Go
// binding: a plan calibrated elsewhere must give byte-identical attention outputs in C,
// Python, Rust and Go.
//
//	go run ./cmd/kvbits-crosslang FIXTURE OUT
//
// FIXTURE holds plan.kvbplan, case.txt (page_size, sequences, tokens, n_kv_heads, n_q_heads,
// head_dim, layer), k.f32 and v.f32 ([sum(tokens), n_kv_heads, head_dim]) and q.f32
// ([sequences, n_q_heads, head_dim]), all little-endian fp32. It writes OUT/out.f32
// ([sequences, n_q_heads, head_dim]) and OUT/lse.f32 ([sequences, n_q_heads]) and exits
// non-zero with the library's message on any error.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"kvbits.dev/kvbits"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: kvbits-crosslang FIXTURE OUT")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "kvbits-crosslang:", err)
		os.Exit(1)
	}
}

// fixtureCase is case.txt.
type fixtureCase struct {
	pageSize, sequences, nKVHeads, nQHeads, headDim, layer uint32
	tokens                                                 []uint32
}

func readCase(path string) (fixtureCase, error) {
	var c fixtureCase
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	fields := map[string]*uint32{"page_size": &c.pageSize, "sequences": &c.sequences,
		"n_kv_heads": &c.nKVHeads, "n_q_heads": &c.nQHeads, "head_dim": &c.headDim, "layer": &c.layer}
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		words := strings.Fields(sc.Text())
		if len(words) == 0 {
			continue
		}
		key, values := words[0], words[1:]
		nums := make([]uint32, len(values))
		for i, w := range values {
			n, err := strconv.ParseUint(w, 10, 32)
			if err != nil {
				return c, fmt.Errorf("%s:%d: %q is not a count", path, line, w)
			}
			nums[i] = uint32(n)
		}
		switch {
		case key == "tokens":
			c.tokens = nums
		case fields[key] != nil:
			if len(nums) != 1 {
				return c, fmt.Errorf("%s:%d: %s takes one value", path, line, key)
			}
			*fields[key] = nums[0]
		default:
			continue // keys added later by the fixture's writer do not concern this program
		}
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	for key := range fields {
		if !seen[key] {
			return c, fmt.Errorf("%s: no %s line", path, key)
		}
	}
	if uint32(len(c.tokens)) != c.sequences {
		return c, fmt.Errorf("%s: %d token counts for %d sequences", path, len(c.tokens), c.sequences)
	}
	return c, nil
}

// readF32 reads a little-endian fp32 file that must hold exactly n values.
func readF32(path string, n uint64) ([]float32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if uint64(len(b)) != 4*n {
		return nil, fmt.Errorf("%s: %d bytes, want %d (%d fp32 values)", path, len(b), 4*n, n)
	}
	x := make([]float32, n)
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return x, nil
}

func writeF32(path string, x []float32) error {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return os.WriteFile(path, b, 0o644)
}

func run(fixture, outDir string) error {
	c, err := readCase(filepath.Join(fixture, "case.txt"))
	if err != nil {
		return err
	}
	ctx, err := kvbits.NewContext(&kvbits.ContextParams{Backend: kvbits.BackendCPU, NThreads: 2})
	if err != nil {
		return err
	}
	defer ctx.Close()
	plan, err := kvbits.LoadPlanFile(filepath.Join(fixture, "plan.kvbplan"))
	if err != nil {
		return err
	}
	defer plan.Close()
	info, err := plan.Info()
	if err != nil {
		return err
	}
	if err := plan.CheckShape(info.NLayers, c.nQHeads, c.nKVHeads, c.headDim); err != nil {
		return err
	}
	var total uint64
	for _, n := range c.tokens {
		total += uint64(n)
	}
	kvRow, qRow := uint64(c.nKVHeads)*uint64(c.headDim), uint64(c.nQHeads)*uint64(c.headDim)
	k, err := readF32(filepath.Join(fixture, "k.f32"), total*kvRow)
	if err != nil {
		return err
	}
	v, err := readF32(filepath.Join(fixture, "v.f32"), total*kvRow)
	if err != nil {
		return err
	}
	q, err := readF32(filepath.Join(fixture, "q.f32"), uint64(c.sequences)*qRow)
	if err != nil {
		return err
	}

	params := kvbits.DefaultCacheParams()
	params.PageSize, params.MaxPages = c.pageSize, 256
	cache, err := kvbits.NewCache(ctx, plan, params)
	if err != nil {
		return err
	}
	defer cache.Close()
	seqs := make([]uint64, c.sequences)
	for i := range seqs {
		if seqs[i], err = cache.AddSequence(); err != nil {
			return err
		}
	}
	if err := cache.Append(c.layer, seqs, c.tokens, k, v); err != nil {
		return err
	}
	out := make([]float32, uint64(c.sequences)*qRow)
	lse := make([]float32, uint64(c.sequences)*uint64(c.nQHeads))
	if err := cache.Decode(c.layer, seqs, q, out, lse, nil); err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	if err := writeF32(filepath.Join(outDir, "out.f32"), out); err != nil {
		return err
	}
	return writeF32(filepath.Join(outDir, "lse.f32"), lse)
}
