package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kvbits.dev/kvbits"
)

// The fixture: 3 sequences of 21, 1 and 40 tokens in layer 1 of a 2-layer model, GQA 4/2,
// head_dim 16, pages of 16 tokens.
const (
	nQ, nKV, dim = 4, 2, 16
)

var tokens = []uint32{21, 1, 40}

func lcg(n int, seed *uint32) []float32 {
	x := make([]float32, n)
	for i := range x {
		*seed = *seed*1664525 + 1013904223
		x[i] = (float32(*seed>>8)/16777216.0 - 0.5) * 4
	}
	return x
}

func writeFixture(t *testing.T) (dir string, k, v, q []float32) {
	t.Helper()
	dir = t.TempDir()
	ctx, err := kvbits.NewContext(&kvbits.ContextParams{Backend: kvbits.BackendCPU, NThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	shape := kvbits.DefaultModelShape()
	shape.NLayers, shape.NQHeads, shape.NKVHeads, shape.HeadDim = 2, nQ, nKV, dim
	cal, err := kvbits.NewCalibrator(ctx, shape)
	if err != nil {
		t.Fatal(err)
	}
	defer cal.Close()
	seed := uint32(2)
	for l := uint32(0); l < 2; l++ {
		if err := cal.Observe(l, lcg(32*nQ*dim, &seed), lcg(32*nKV*dim, &seed)); err != nil {
			t.Fatal(err)
		}
	}
	plan, err := cal.BuildPlan(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	if err := plan.Save(filepath.Join(dir, "plan.kvbplan")); err != nil {
		t.Fatal(err)
	}
	caseTxt := "page_size 16\nsequences 3\ntokens 21 1 40\nn_kv_heads 2\nn_q_heads 4\nhead_dim 16\nlayer 1\n"
	if err := os.WriteFile(filepath.Join(dir, "case.txt"), []byte(caseTxt), 0o644); err != nil {
		t.Fatal(err)
	}
	k, v, q = lcg(62*nKV*dim, &seed), lcg(62*nKV*dim, &seed), lcg(3*nQ*dim, &seed)
	for name, x := range map[string][]float32{"k.f32": k, "v.f32": v, "q.f32": q} {
		if err := writeF32(filepath.Join(dir, name), x); err != nil {
			t.Fatal(err)
		}
	}
	return dir, k, v, q
}

// The outputs are the binding's own decode of the same cache, byte for byte, and match plain
// softmax attention over the cache's read-back keys and values.
func TestCrosslangOutputs(t *testing.T) {
	dir, k, v, q := writeFixture(t)
	out := filepath.Join(t.TempDir(), "out")
	if err := run(dir, out); err != nil {
		t.Fatal(err)
	}
	gotOut, err := readF32(filepath.Join(out, "out.f32"), 3*nQ*dim)
	if err != nil {
		t.Fatal(err)
	}
	gotLse, err := readF32(filepath.Join(out, "lse.f32"), 3*nQ)
	if err != nil {
		t.Fatal(err)
	}

	ctx, _ := kvbits.NewContext(&kvbits.ContextParams{Backend: kvbits.BackendCPU, NThreads: 1})
	defer ctx.Close()
	plan, err := kvbits.LoadPlanFile(filepath.Join(dir, "plan.kvbplan"))
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	p := kvbits.DefaultCacheParams()
	p.PageSize, p.MaxPages = 16, 256
	cache, err := kvbits.NewCache(ctx, plan, p)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	seqs := make([]uint64, 3)
	for i := range seqs {
		seqs[i], _ = cache.AddSequence()
	}
	if err := cache.Append(1, seqs, tokens, k, v); err != nil {
		t.Fatal(err)
	}
	wantOut, wantLse := make([]float32, 3*nQ*dim), make([]float32, 3*nQ)
	if err := cache.Decode(1, seqs, q, wantOut, wantLse, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f32Bytes(gotOut), f32Bytes(wantOut)) || !bytes.Equal(f32Bytes(gotLse), f32Bytes(wantLse)) {
		t.Error("crosslang outputs differ from the binding's decode")
	}
	for i, s := range seqs {
		kr, vr, err := cache.Read(s, 1, 0, tokens[i])
		if err != nil {
			t.Fatal(err)
		}
		for h := 0; h < nQ; h++ {
			qh := q[(i*nQ+h)*dim : (i*nQ+h+1)*dim]
			g := h / (nQ / nKV)
			logits := make([]float64, tokens[i])
			m := math.Inf(-1)
			for t := range logits {
				for d := 0; d < dim; d++ {
					logits[t] += float64(qh[d]) * float64(kr[(t*nKV+g)*dim+d]) / 4 // 1/sqrt(16)
				}
				m = math.Max(m, logits[t])
			}
			var sum float64
			ref := make([]float64, dim)
			for t := range logits {
				w := math.Exp(logits[t] - m)
				sum += w
				for d := 0; d < dim; d++ {
					ref[d] += w * float64(vr[(t*nKV+g)*dim+d])
				}
			}
			for d := 0; d < dim; d++ {
				if got := float64(gotOut[(i*nQ+h)*dim+d]); math.Abs(got-ref[d]/sum) > 1e-5*(1+math.Abs(ref[d]/sum)) {
					t.Fatalf("seq %d head %d dim %d: %g, reference %g", i, h, d, got, ref[d]/sum)
				}
			}
			if got := float64(gotLse[i*nQ+h]); math.Abs(got-(m+math.Log(sum))) > 1e-5*(1+math.Abs(got)) {
				t.Fatalf("seq %d head %d: lse %g, reference %g", i, h, got, m+math.Log(sum))
			}
		}
	}
}

func TestCrosslangErrors(t *testing.T) {
	dir, _, _, _ := writeFixture(t)
	edit := func(name string, data []byte) string {
		d := t.TempDir()
		for _, f := range []string{"plan.kvbplan", "case.txt", "k.f32", "v.f32", "q.f32"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			if f == name {
				b = data
			}
			if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	plan, _ := os.ReadFile(filepath.Join(dir, "plan.kvbplan"))
	k, _ := os.ReadFile(filepath.Join(dir, "k.f32"))
	for _, c := range []struct {
		name, fixture, want string
	}{
		{"truncated plan", edit("plan.kvbplan", plan[:len(plan)-3]), "corrupt_data"},
		{"k one value short", edit("k.f32", k[4:]), "want 7936"},
		{"other head_dim", edit("case.txt", []byte("page_size 16\nsequences 3\ntokens 21 1 40\n"+
			"n_kv_heads 2\nn_q_heads 4\nhead_dim 32\nlayer 1\n")), "shape_mismatch"},
		{"layer 2 of 2", edit("case.txt", []byte("page_size 16\nsequences 3\ntokens 21 1 40\n"+
			"n_kv_heads 2\nn_q_heads 4\nhead_dim 16\nlayer 2\n")), "invalid_argument"},
		{"q for 3 of 4 sequences", edit("case.txt", []byte("page_size 16\nsequences 4\ntokens 21 1 40 0\n"+
			"n_kv_heads 2\nn_q_heads 4\nhead_dim 16\nlayer 1\n")), "q.f32"},
		{"no layer line", edit("case.txt", []byte("page_size 16\nsequences 3\ntokens 21 1 40\n"+
			"n_kv_heads 2\nn_q_heads 4\nhead_dim 16\n")), "no layer line"},
	} {
		out := t.TempDir()
		err := run(c.fixture, out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
		if _, statErr := os.Stat(filepath.Join(out, "out.f32")); statErr == nil {
			t.Errorf("%s: out.f32 written", c.name)
		}
	}
}

func f32Bytes(x []float32) []byte {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(math.Float32bits(v)), byte(math.Float32bits(v)>>8),
			byte(math.Float32bits(v)>>16), byte(math.Float32bits(v)>>24)
	}
	return b
}
